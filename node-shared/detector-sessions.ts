/**
 * A BlazeFace detector in onnxruntime-node on the CPU, as the server's decode threads, training's aligned crops
 * and the face benches run it: one session per input side it is run at (`detectorSides`: its own, and a face
 * crop's resized one), behind one RunDetector.
 */
import { resizedDetectorGraphs } from '../contract/face/detector-resize.ts';
import { DEFAULT_CROP_PASS, runnerBySide, type CropPass, type RunDetector } from '../contract/face/photo.ts';
import { createSession, releaseSession, run, type NodeSession } from './onnxruntime-node.ts';

export interface DetectorSessions {
  /** the detector's own square input side, read from the model */
  inputSize: number;
  run: RunDetector;
  release(): Promise<void>;
}

export async function openDetectorSessions(bytes: Uint8Array, threads: number, cropPass: CropPass = DEFAULT_CROP_PASS): Promise<DetectorSessions> {
  const own = await createSession(bytes, { provider: 'cpu', threads });
  const { name, shape } = own.inputs[0];
  const inputSize = Number(shape[1]);
  const sessions = new Map<number, NodeSession>([[inputSize, own]]);
  try {
    for (const [side, graph] of resizedDetectorGraphs(bytes, inputSize, cropPass)) sessions.set(side, await createSession(graph, { provider: 'cpu', threads }));
  } catch (error) {
    for (const session of sessions.values()) await releaseSession(session);
    throw error;
  }
  return {
    inputSize,
    run: runnerBySide(sessions, async (session, input, side) => Object.values(await run(session, { [name]: { data: input, dims: [1, side, side, 3] } }))),
    release: async () => {
      for (const session of sessions.values()) await releaseSession(session);
    },
  };
}
