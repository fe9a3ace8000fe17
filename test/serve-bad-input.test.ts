/**
 * Bad input of every kind gets the right 4xx and a JSON error a person can act on (no stack trace, no file
 * path), and the server goes on serving: a valid request succeeds after each.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { blackPng, makeImage, rawRequest, startTestServer, type TestServer } from './helpers/serve-harness.ts';
import { concatBytes } from '../contract/onnx-wire.ts';

interface ErrorBody {
  error: { code: string; message: string };
}

/** A JPEG whose frame header claims `width` x `height`, with no image data worth the name. */
function jpegClaiming(width: number, height: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array([0xff, 0xd8, 0xff, 0xc0, 0x00, 0x11, 0x08, height >> 8, height & 0xff, width >> 8, width & 0xff, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xd9]);
}

const encode = (text: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(text);

describe('serve: bad input', () => {
  let t: TestServer;
  let jpeg: Uint8Array<ArrayBuffer>;
  let demoRoot: string;

  before(async () => {
    demoRoot = mkdtempSync(join(tmpdir(), 'serve-demo-'));
    mkdirSync(join(demoRoot, 'dist'));
    writeFileSync(join(demoRoot, 'dist', 'index.html'), '<!doctype html><title>demo</title>DEMO-INDEX');
    writeFileSync(join(demoRoot, 'dist', 'app.js'), 'console.log("demo")');
    writeFileSync(join(demoRoot, 'dist', '.env'), 'DOTFILE-SECRET');
    writeFileSync(join(demoRoot, 'secret.txt'), 'OUTSIDE-SECRET');
    t = await startTestServer({ flags: ['--web-demo', join(demoRoot, 'dist'), '--max-body-bytes', String(512 * 1024), '--timeout-ms', '1500', '--max-batch-images', '4'] });
    jpeg = await makeImage(200, 200, 'image/jpeg', 3);
  });
  after(async () => {
    await t.close();
    rmSync(demoRoot, { recursive: true, force: true });
  });

  /** Posts, checks the status and error code, that the message is for a person, and that serving goes on. */
  async function expectError(init: { path?: string; method?: string; body?: BodyInit; type?: string }, status: number, code: string): Promise<ErrorBody> {
    const headers: Record<string, string> = init.type === undefined ? {} : { 'content-type': init.type };
    const res = await fetch(`${t.url}${init.path ?? '/v1/predict'}`, { method: init.method ?? 'POST', body: init.body, headers });
    assert.equal(res.status, status);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const body = (await res.json()) as ErrorBody;
    assert.deepEqual(Object.keys(body), ['error']);
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message']);
    assert.equal(body.error.code, code);
    assertForPeople(body.error.message);
    await expectServing();
    return body;
  }

  function assertForPeople(message: string): void {
    assert.ok(message.length > 10, 'a message says what to do');
    assert.doesNotMatch(message, /\n\s+at /, 'no stack trace');
    assert.ok(!message.includes(t.modelsDir) && !message.includes(tmpdir()) && !message.includes(process.cwd()), `no file path in "${message}"`);
  }

  async function expectServing(): Promise<void> {
    const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg' } });
    assert.equal(res.status, 200, 'a valid request still succeeds');
    await res.arrayBuffer();
  }

  it('refuses an empty body with 400 empty_body, and an empty "image" file part saying it is the part', async () => {
    const raw = await expectError({ body: new Uint8Array(0), type: 'image/jpeg' }, 400, 'empty_body');
    assert.match(raw.error.message, /request body is empty/);
    const form = new FormData();
    form.append('image', new Blob([]), 'face.jpg');
    const part = await expectError({ body: form }, 400, 'empty_body');
    assert.match(part.error.message, /"image" file part is empty \(0 bytes\)/);
  });

  it('refuses bytes that are not an image with 415 unsupported_image_format', async () => {
    const noise = new Uint8Array(4096).map((_, i) => (i * 131 + 7) & 0xff);
    await expectError({ body: noise, type: 'image/jpeg' }, 415, 'unsupported_image_format');
  });

  it('refuses text sent as text/plain with 415 unsupported_media_type, and sent as an image with 415 unsupported_image_format', async () => {
    await expectError({ body: 'hello, this is text', type: 'text/plain' }, 415, 'unsupported_media_type');
    await expectError({ body: encode('hello, this is text'), type: 'image/png' }, 415, 'unsupported_image_format');
  });

  it('refuses a PDF with 415, whatever its Content-Type', async () => {
    const pdf = encode('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n');
    await expectError({ body: pdf, type: 'application/pdf' }, 415, 'unsupported_media_type');
    await expectError({ body: pdf, type: 'image/jpeg' }, 415, 'unsupported_image_format');
  });

  it('refuses truncated JPEGs with 422 corrupt_image, saying what libvips found', async () => {
    const half = await expectError({ body: jpeg.slice(0, jpeg.length >> 1), type: 'image/jpeg' }, 422, 'corrupt_image');
    assert.match(half.error.message, /^The jpeg image could not be decoded \(.*premature end of JPEG.*\); the file may be truncated or corrupted$/);
    await expectError({ body: jpeg.slice(0, 300), type: 'image/jpeg' }, 422, 'corrupt_image');
  });

  it('decodes a JPEG whose scan is damaged as browsers do (libjpeg fills it in), and answers only for faces it finds', async () => {
    // Illegal markers inside the compressed data: a warning, as in many cameras' own files, not a refusal.
    const corrupted = jpeg.slice();
    for (let i = Math.floor(corrupted.length / 3); i < Math.floor(corrupted.length / 3) + 400; i += 2) corrupted.set([0xff, 0x06], i);
    const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: corrupted, headers: { 'Content-Type': 'image/jpeg' } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { image: { width: number }; faces: unknown[] };
    assert.equal(body.image.width, 200);
    assert.deepEqual(body.faces, [], 'a pattern with damaged blocks holds no face');
  });

  it('refuses truncated and corrupted PNGs with 422 corrupt_image', async () => {
    const png = await makeImage(120, 120, 'image/png', 4);
    await expectError({ body: png.slice(0, png.length >> 1), type: 'image/png' }, 422, 'corrupt_image');
    const corrupted = png.slice();
    for (let i = 100; i < 400; i++) corrupted[i] = (i * 7) & 0xff;
    await expectError({ body: corrupted, type: 'image/png' }, 422, 'corrupt_image');
  });

  it('refuses truncated WebP, GIF and TIFF files with 422 corrupt_image', async () => {
    const pattern = sharp(await makeImage(160, 120, 'image/png', 5));
    const files = { webp: await pattern.clone().webp().toBuffer(), gif: await pattern.clone().gif().toBuffer(), tiff: await pattern.clone().tiff({ compression: 'lzw' }).toBuffer() };
    for (const [format, file] of Object.entries(files)) {
      const cut = new Uint8Array(file.subarray(0, file.length >> 1));
      const body = await expectError({ body: cut, type: `image/${format}` }, 422, 'corrupt_image');
      assert.match(body.error.message, new RegExp(format, 'i'), `the ${format} message names the format`);
    }
  });

  it('decodes a valid WebP, and refuses a WebP by its header (too small, too large) or its damaged data, with the usual codes', async () => {
    const webp = (side: number) => new Uint8Array([...'RIFF'].map((c) => c.charCodeAt(0)).concat([0x24, 0, 0, 0], [...'WEBPVP8 '].map((c) => c.charCodeAt(0)), [0x18, 0, 0, 0, 0x30, 0x01, 0x00, 0x9d, 0x01, 0x2a, side & 0xff, side >> 8, side & 0xff, side >> 8], new Array(20).fill(0)));
    const valid = new Uint8Array(await sharp(jpeg).webp().toBuffer());
    const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: valid, headers: { 'content-type': 'image/webp' } });
    assert.equal(res.status, 200, 'sharp decodes WebP');
    assert.deepEqual(((await res.json()) as { image: { width: number; height: number } }).image, { width: 200, height: 200 });
    const damaged = await expectError({ body: webp(200), type: 'image/webp' }, 422, 'corrupt_image');
    assert.match(damaged.error.message, /webp image could not be decoded/);
    // The header is read first: a size outside the limits is refused before any pixel is decoded.
    await expectError({ body: webp(1), type: 'image/webp' }, 422, 'image_too_small');
    await expectError({ body: webp(16_000), type: 'image/webp' }, 413, 'image_too_large');
    await expectError({ body: webp(200).slice(0, 20), type: 'image/webp' }, 422, 'corrupt_image'); // its header cut short
  });

  it('refuses HEIC, which it does not decode, with 415 unsupported_image_format listing what it takes', async () => {
    const heic = new Uint8Array([0, 0, 0, 0x18, ...[...'ftypheic'].map((c) => c.charCodeAt(0)), 0, 0, 0, 0, ...new Array(40).fill(0)]);
    const body = await expectError({ body: heic, type: 'image/heic' }, 415, 'unsupported_image_format');
    assert.match(body.error.message, /match none of: .*jpeg.*png/);
  });

  it('refuses unknown or bad query parameters on both predict routes with 400 invalid_parameter naming the parameter', async () => {
    const cases: [query: string, names: RegExp][] = [
      ['detetc=none', /Unknown query parameter "detetc"; expected one of: detect, maxFaces, minScore/],
      ['detect=maybe', /detect="maybe" is not a mode; expected one of: faces, none/],
      ['maxFaces=0', /maxFaces="0" must be a whole number from 1 to 100/],
      ['maxFaces=101', /maxFaces="101"/],
      ['maxFaces=2.5', /maxFaces="2\.5"/],
      ['minScore=1.5', /minScore="1\.5" must be a number from 0 to 1/],
      ['minScore=', /minScore=""/],
      ['detect=none&maxFaces=2', /maxFaces applies to face detection; it cannot go with detect=none/],
      ['maxFaces=1&maxFaces=2', /"maxFaces" is given 2 times/],
    ];
    for (const [query, names] of cases) {
      const body = await expectError({ path: `/v1/predict?${query}`, body: jpeg, type: 'image/jpeg' }, 400, 'invalid_parameter');
      assert.match(body.error.message, names, query);
    }
    const batch = new FormData();
    batch.append('image', new Blob([jpeg], { type: 'image/jpeg' }), 'a.jpg');
    const body = await expectError({ path: '/v1/predict/batch?minScore=high', body: batch }, 400, 'invalid_parameter');
    assert.match(body.error.message, /minScore="high"/);
  });

  it('rejects a PNG decompression bomb (10000x10000) from its header, before allocating its pixels', async () => {
    const bomb = blackPng(10_000, 10_000);
    assert.ok(bomb.length < 512 * 1024, `the bomb is small on the wire (${bomb.length} bytes)`);
    const decodesBefore = await decodeCount();
    const rssBefore = process.memoryUsage().rss;
    const body = await expectError({ body: bomb, type: 'image/png' }, 413, 'image_too_large');
    assert.match(body.error.message, /10000x10000/);
    // Decoded, it would be 400 MB of RGBA in this process (the decode threads live in it).
    assert.ok(process.memoryUsage().rss - rssBefore < 150 * 1024 * 1024, 'no pixel buffer was allocated');
    // One decode for the valid request after it, none for the bomb.
    assert.equal((await decodeCount()) - decodesBefore, 1);
  });

  it('rejects a tiny JPEG that claims 60000x60000 with 413 image_too_large', async () => {
    await expectError({ body: jpegClaiming(60_000, 60_000), type: 'image/jpeg' }, 413, 'image_too_large');
  });

  it('refuses a 1x1 image with 422 image_too_small', async () => {
    await expectError({ body: await makeImage(1, 1, 'image/png'), type: 'image/png' }, 422, 'image_too_small');
  });

  it('refuses multipart without an "image" field with 400 missing_image_field', async () => {
    const form = new FormData();
    form.append('file', new Blob([jpeg], { type: 'image/jpeg' }), 'face.jpg');
    form.append('comment', 'hello');
    await expectError({ body: form }, 400, 'missing_image_field');
  });

  it('refuses an "image" part sent as a text field, rather than skipping it and shifting a batch\'s answers', async () => {
    const one = new FormData();
    one.append('image', 'hello');
    const body = await expectError({ body: one }, 400, 'malformed_multipart');
    assert.match(body.error.message, /text field, not a file/);
    const batch = new FormData();
    batch.append('image', new Blob([jpeg], { type: 'image/jpeg' }), 'a.jpg');
    batch.append('image', 'not a file');
    batch.append('image', new Blob([jpeg], { type: 'image/jpeg' }), 'b.jpg');
    await expectError({ body: batch, path: '/v1/predict/batch' }, 400, 'malformed_multipart');
  });

  it('refuses a compressed body (Content-Encoding: gzip) with 415, saying to send the bytes as they are', async () => {
    const res = await fetch(`${t.url}/v1/predict`, { method: 'POST', body: jpeg, headers: { 'content-type': 'image/jpeg', 'content-encoding': 'gzip' } });
    assert.equal(res.status, 415);
    const body = (await res.json()) as ErrorBody;
    assert.equal(body.error.code, 'unsupported_media_type');
    assert.match(body.error.message, /Content-Encoding "gzip"/);
    await expectServing();
  });

  it('refuses malformed multipart (no boundary, or cut before its closing boundary) with 400 malformed_multipart', async () => {
    await expectError({ body: 'whatever', type: 'multipart/form-data' }, 400, 'malformed_multipart');
    const cut = `--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n${'x'.repeat(100)}`;
    await expectError({ body: cut, type: 'multipart/form-data; boundary=XyZ' }, 400, 'malformed_multipart');
  });

  it('refuses two images on /v1/predict, and too many on /v1/predict/batch, with 413 too_many_images', async () => {
    const two = new FormData();
    two.append('image', new Blob([jpeg], { type: 'image/jpeg' }), 'a.jpg');
    two.append('image', new Blob([jpeg], { type: 'image/jpeg' }), 'b.jpg');
    await expectError({ body: two }, 413, 'too_many_images');
    const five = new FormData();
    for (let i = 0; i < 5; i++) five.append('image', new Blob([jpeg], { type: 'image/jpeg' }), `${i}.jpg`);
    await expectError({ body: five, path: '/v1/predict/batch' }, 413, 'too_many_images');
  });

  it('refuses a raw body on /v1/predict/batch with 415', async () => {
    await expectError({ body: jpeg, type: 'image/jpeg', path: '/v1/predict/batch' }, 415, 'unsupported_media_type');
  });

  it('refuses a body over the size limit with 413 payload_too_large, declared or streamed', async () => {
    const declared = await expectError({ body: new Uint8Array(600 * 1024), type: 'image/jpeg' }, 413, 'payload_too_large');
    assert.match(declared.error.message, /limit of 512\.0 KB/);
    const streamed = await rawRequest(t.server.port, ['POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n', `${(300 * 1024).toString(16)}\r\n`, new Uint8Array(300 * 1024), '\r\n', `${(300 * 1024).toString(16)}\r\n`, new Uint8Array(300 * 1024), '\r\n0\r\n\r\n']);
    assert.equal(streamed?.status, 413);
    assert.equal((JSON.parse(streamed?.body ?? '{}') as ErrorBody).error.code, 'payload_too_large');
    await expectServing();
  });

  it('answers a wrong method with 405 and Allow, and an unknown route with a JSON 404', async () => {
    const res = await fetch(`${t.url}/v1/predict`);
    assert.equal(res.headers.get('allow'), 'POST');
    await res.arrayBuffer();
    await expectError({ method: 'GET' }, 405, 'method_not_allowed');
    await expectError({ method: 'DELETE', path: '/healthz' }, 405, 'method_not_allowed');
    await expectError({ method: 'GET', path: '/v2/predict' }, 404, 'not_found');
    await expectError({ method: 'POST', path: '/nope', body: jpeg, type: 'image/jpeg' }, 404, 'not_found');
  });

  it('answers a path that is not valid percent-encoding with 400 malformed_url, wherever it points', async () => {
    for (const path of ['/%E0%A4%A', '/app.js%', '/models/age%zz.onnx']) {
      const body = await expectError({ method: 'GET', path }, 400, 'malformed_url');
      assert.match(body.error.message, /not valid percent-encoding/);
    }
    await expectError({ method: 'POST', path: '/v1/predict%', body: jpeg, type: 'image/jpeg' }, 400, 'malformed_url');
    await expectServing();
  });

  it('survives an upload cut off half-way, whether the client closes or half-closes', async () => {
    const head = `POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\n\r\n`;
    const destroyed = await rawRequest(t.server.port, [head, jpeg.slice(0, jpeg.length >> 1)], { destroyAfterWrite: true });
    assert.equal(destroyed, undefined);
    const halfClosed = await rawRequest(t.server.port, [head, jpeg.slice(0, jpeg.length >> 1)], { endAfterWrite: true });
    // Either the server answers what happened, or it closes the connection; it must not crash or hang.
    if (halfClosed !== undefined) {
      assert.equal(halfClosed.status, 400);
      assert.equal((JSON.parse(halfClosed.body) as ErrorBody).error.code, 'incomplete_upload');
    }
    await expectServing();
  });

  it('takes a client that hangs up before its answer as no server fault: nothing logged as failed, no internal_error', async () => {
    const head = `POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\n\r\n`;
    for (let i = 0; i < 5; i++) await rawRequest(t.server.port, [head, jpeg], { destroyAfterWrite: true });
    await expectServing();
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    assert.doesNotMatch(metrics, /errors_total\{code="internal_error"\}/);
    assert.ok(!t.logs.some((line) => line.includes('request failed')), t.logs.filter((line) => line.includes('failed')).join('\n'));
  });

  it('answers an upload that stalls with 408 upload_timeout after the time limit, and closes the connection', async () => {
    const head = `POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\n\r\n`;
    const started = performance.now();
    const res = await rawRequest(t.server.port, [head, jpeg.slice(0, 100)], { waitMs: 5000 });
    assert.equal(res?.status, 408);
    assert.equal((JSON.parse(res?.body ?? '{}') as ErrorBody).error.code, 'upload_timeout');
    assert.ok(performance.now() - started >= 1400, 'after the configured 1500 ms');
    // The rest of the body may never come: the connection is not kept waiting for it. rawRequest closes its own
    // socket once the answer is in, so this one waits for the server to end it.
    assert.equal(res?.headers.connection, 'close');
    const socket = connect({ host: '127.0.0.1', port: t.server.port });
    let answer = '';
    socket.on('data', (chunk: Uint8Array) => (answer += Buffer.from(chunk).toString('latin1')));
    const ended = new Promise<boolean>((resolve) => {
      socket.on('end', () => resolve(true));
      socket.on('close', () => resolve(true));
      setTimeout(() => resolve(false), 5000);
    });
    socket.write(head);
    socket.write(jpeg.slice(0, 100));
    try {
      assert.equal(await ended, true, 'the server ended the connection');
      assert.match(answer, /^HTTP\/1\.1 408 /);
    } finally {
      socket.destroy();
    }
    await expectServing();
  });

  it('serves the web demo, and nothing outside its folder whatever the encoding of the path', async () => {
    const index = await fetch(`${t.url}/`);
    assert.equal(index.status, 200);
    assert.match(await index.text(), /DEMO-INDEX/);
    const app = await fetch(`${t.url}/app.js`);
    assert.equal(app.status, 200);
    assert.match(app.headers.get('content-type') ?? '', /javascript/);
    await app.arrayBuffer();
    const attempts = [
      '/../secret.txt',
      '/..%2fsecret.txt',
      '/%2e%2e/secret.txt',
      '/%2e%2e%2fsecret.txt',
      '/.%2e/secret.txt',
      '/%252e%252e/secret.txt',
      '/..%5csecret.txt',
      '/%5c..%5csecret.txt',
      '/%c0%ae%c0%ae/secret.txt',
      '/app.js/../../secret.txt',
      '/index.html%00.txt',
      '/%00',
      '/%E0%A4%A',
      '//../secret.txt',
      `/${'../'.repeat(12)}etc/passwd`,
      `/${'%2e%2e%2f'.repeat(12)}etc/passwd`,
      '/.env',
      '/%2eenv',
    ];
    for (const path of attempts) {
      for (const target of [path, `http://127.0.0.1${path}`]) {
        const res = await rawRequest(t.server.port, [`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
        assert.ok(res !== undefined, `an answer for ${target}`);
        assert.ok([400, 403, 404].includes(res.status), `${target} -> ${res.status}`);
        assert.ok(!res.body.includes('OUTSIDE-SECRET') && !res.body.includes('DOTFILE-SECRET') && !res.body.includes('root:'), `${target} leaked a file`);
      }
    }
    await expectServing();
  });

  async function decodeCount(): Promise<number> {
    const text = await (await fetch(`${t.url}/metrics`)).text();
    return Number(/^image_decode_seconds_count (\d+)$/m.exec(text)?.[1] ?? 0);
  }
});
