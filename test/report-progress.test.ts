import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatDuration } from '../node-shared/format.ts';
import { formatEpochLine, formatSharedEpochLine, ProgressBar } from '../training/report/progress.ts';

describe('formatEpochLine', () => {
  test('keeps every column at the same position from epoch 1 to the last', () => {
    const first = formatEpochLine({ epoch: 1, epochs: 20, loss: 1.23456, accuracy: 0.5, valLoss: 10.5, valAccuracy: 0.25, seconds: 3.21, imagesPerSecond: 812.4 });
    const last = formatEpochLine({ epoch: 20, epochs: 20, loss: 0.1, accuracy: 0.95, valLoss: 0.2, valAccuracy: 0.9, seconds: 12.5, imagesPerSecond: 2345 });
    assert.equal(first, 'epoch  1/20  loss  1.2346  acc 0.5000  val_loss 10.5000  val_acc 0.2500      3.2s     812 img/s');
    assert.equal(last, 'epoch 20/20  loss  0.1000  acc 0.9500  val_loss  0.2000  val_acc 0.9000     12.5s    2345 img/s');
    assert.equal(first.length, last.length);
  });

  test('prints a diverged loss as nan and leaves out what was not measured', () => {
    assert.equal(formatEpochLine({ epoch: 2, epochs: 5, loss: NaN }), 'epoch 2/5  loss     nan');
  });
});

describe('formatSharedEpochLine', () => {
  const tasks = [
    { task: 'age', valAccuracy: 0.60417, valMae: 16.744 },
    { task: 'ethnicity', valAccuracy: 0.45833 },
    { task: 'gender', valAccuracy: 0.75 },
  ];

  test('puts an epoch of every task on one line: validation accuracies, the age error, the score and the time left', () => {
    const line = formatSharedEpochLine({ epoch: 2, epochs: 32, tasks, score: 0.60417, improved: true, seconds: 18.24, imagesPerSecond: 21.3, elapsedSeconds: 58, leftSeconds: 870 });
    assert.equal(line, 'epoch 2/32 done, validation: age 60.4% (MAE 16.74 years), ethnicity 45.8%, gender 75.0%, score 0.6042 (best); 18.2 s, 21 img/s; 0:58 elapsed, about 14:30 left');
    assert.doesNotMatch(line, /\n/);
  });

  test('says nothing of a best epoch that was not one, and prints a diverged score as nan', () => {
    const line = formatSharedEpochLine({ epoch: 3, epochs: 3, tasks, score: NaN, improved: false, seconds: 1, imagesPerSecond: 100, elapsedSeconds: 3, leftSeconds: 0 });
    assert.match(line, /^epoch 3\/3 done, .* score nan; /);
    assert.doesNotMatch(line, /best/);
  });
});

describe('formatDuration', () => {
  test('prints minutes:seconds, and hours when needed', () => {
    assert.equal(formatDuration(7), '0:07');
    assert.equal(formatDuration(754), '12:34');
    assert.equal(formatDuration(3723), '1:02:03');
    assert.equal(formatDuration(Infinity), '--:--');
  });
});

/** A stream that records what was written, and a clock the test moves by hand. */
function fakes(isTTY: boolean): { writes: string[]; stream: { write(text: string): boolean; isTTY: boolean }; clock: { ms: number }; now: () => number } {
  const writes: string[] = [];
  const clock = { ms: 0 };
  return { writes, stream: { write: (text: string) => writes.push(text) > 0, isTTY }, clock, now: () => clock.ms };
}

describe('ProgressBar', () => {
  test('in a log (not a TTY) prints one line per 10% with count, rate and ETA', () => {
    const { writes, stream, clock, now } = fakes(false);
    const bar = new ProgressBar(1000, { label: 'decoding', unit: 'images', stream, now });
    for (let done = 1; done <= 1000; done++) {
      clock.ms = done * 2; // 500 images/s
      bar.update(done);
    }
    bar.done();
    assert.equal(writes.length, 11); // 10%, ..., 100%, then the final line
    assert.equal(writes[0], 'decoding   100/1000   10%  500 images/s  ETA 0:02\n');
    assert.equal(writes[9], 'decoding  1000/1000  100%  500 images/s  ETA 0:00\n');
    assert.equal(writes[10], 'decoding  1000/1000  100%  500 images/s  in 0:02\n');
  });

  test('on a TTY redraws one line in place at most every 100 ms, and ends it on done()', () => {
    const { writes, stream, clock, now } = fakes(true);
    const bar = new ProgressBar(50, { stream, now, width: 10 });
    for (let done = 1; done <= 50; done++) {
      clock.ms = done * 10;
      bar.tick();
    }
    bar.done();
    assert.ok(writes.every((w) => w.startsWith('\r')), 'a TTY redraw must start with a carriage return');
    assert.equal(writes.length, 6); // at 10, 110, 210, 310, 410 ms, then done()
    assert.equal(writes[0], '\r[----------]   1/50    2%  100 items/s  ETA 0:00\x1b[K');
    assert.equal(writes[5], '\r[##########]  50/50  100%  100 items/s  in 0:01\x1b[K\n');
  });

  test('clear() takes the bar off a TTY line, prints nothing in a log, and ends the bar', () => {
    const tty = fakes(true);
    const bar = new ProgressBar(4, { stream: tty.stream, now: tty.now });
    bar.update(2);
    bar.clear();
    bar.update(3);
    bar.done();
    assert.equal(tty.writes.length, 2);
    assert.equal(tty.writes[1], '\r\x1b[K');
    const log = fakes(false);
    const quiet = new ProgressBar(4, { stream: log.stream, now: log.now });
    quiet.clear();
    assert.equal(log.writes.length, 0);
  });

  test('ignores updates after done() and clamps counts to the total', () => {
    const { writes, stream, now } = fakes(false);
    const bar = new ProgressBar(3, { stream, now });
    bar.update(10);
    bar.done();
    bar.update(1);
    bar.done();
    assert.equal(writes.length, 2);
    assert.match(writes[0], /^3\/3  100%/);
  });
});
