// SHA-256 on a worker thread, for the one place where hashing competes with the bytes it hashes: NARs of
// the local store are generated, hashed and sent as they stream (src/localstore/verified-nar.ts), and on
// the event loop the hash costs as much as reading and sending together (0.57 s per GB here, of 0.88 s).
// On a worker it runs beside them. Chunks in SharedArrayBuffers (a shared BufferPool) are read in place;
// others are copied into the message.
//
// One worker serves every hash in the process, in the order updates arrive; it is started on first use
// and does not keep the process alive. If it cannot start, or dies, hashes fall back to the calling thread
// (new ones at once; those in progress fail, and their response is cut off like any other NAR error).
import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

export interface IncrementalSha256 {
  /** Adds `chunk`. Resolves once the bytes are hashed: only then may the caller reuse the chunk's memory. */
  update(chunk: Uint8Array): Promise<void>;
  /** The digest of everything added. The hash cannot be used afterwards. */
  digest(): Promise<Buffer>;
  /** Forgets an unfinished hash (a response cut short). */
  dispose(): void;
}

type Request =
  | { readonly op: 'update'; readonly id: number; readonly data: Uint8Array }
  | { readonly op: 'digest'; readonly id: number }
  | { readonly op: 'drop'; readonly id: number };

type Reply = { readonly id: number; readonly digest?: Uint8Array; readonly error?: string };

// Plain CommonJS run with `eval`: no file to locate next to compiled or transpiled sources.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (request) => {
  try {
    if (request.op === 'update') {
      let hash = hashes.get(request.id);
      if (hash === undefined) {
        hash = createHash('sha256');
        hashes.set(request.id, hash);
      }
      hash.update(request.data);
      parentPort.postMessage({ id: request.id });
    } else if (request.op === 'digest') {
      const hash = hashes.get(request.id) ?? createHash('sha256');
      hashes.delete(request.id);
      parentPort.postMessage({ id: request.id, digest: hash.digest() });
    } else {
      hashes.delete(request.id);
    }
  } catch (error) {
    hashes.delete(request.id);
    parentPort.postMessage({ id: request.id, error: String(error) });
  }
});
`;

interface Waiter {
  resolve(reply: Reply): void;
  reject(error: Error): void;
}

/** The process's hashing thread: requests per hash id are answered in order. */
class HashThread {
  readonly #worker: Worker;
  readonly #waiting = new Map<number, Waiter[]>();
  #failed: Error | undefined;
  /** Requests awaiting a reply: the thread keeps the process alive only while there are some. */
  #pending = 0;

  constructor(onExit: () => void) {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    this.#worker.on('message', (reply: Reply) => {
      const queue = this.#waiting.get(reply.id);
      const waiter = queue?.shift();
      if (queue?.length === 0) this.#waiting.delete(reply.id);
      this.#settled();
      waiter?.resolve(reply);
    });
    const fail = (error: Error): void => {
      this.#failed ??= error;
      for (const queue of this.#waiting.values()) for (const waiter of queue) waiter.reject(error);
      this.#waiting.clear();
      this.#pending = 0;
      onExit();
    };
    this.#worker.on('error', fail);
    this.#worker.on('exit', (code) => {
      fail(new Error(`the hashing thread exited (code ${code})`));
    });
    this.#worker.unref();
  }

  #settled(): void {
    this.#pending--;
    if (this.#pending === 0) this.#worker.unref();
  }

  get usable(): boolean {
    return this.#failed === undefined;
  }

  request(request: Request): Promise<Reply> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => {
      const queue = this.#waiting.get(request.id);
      if (queue === undefined) this.#waiting.set(request.id, [{ resolve, reject }]);
      else queue.push({ resolve, reject });
      if (this.#pending++ === 0) this.#worker.ref();
      this.#worker.postMessage(request);
    });
  }

  send(request: Request): void {
    if (this.#failed === undefined) this.#worker.postMessage(request);
  }

  terminate(): Promise<number> {
    return this.#worker.terminate();
  }
}

let thread: HashThread | undefined;
let unavailable = false;
let nextId = 1;

function hashThread(): HashThread | undefined {
  if (unavailable) return undefined;
  if (thread === undefined || !thread.usable) {
    try {
      const created: HashThread = new HashThread(() => {
        if (thread === created) thread = undefined;
      });
      thread = created;
    } catch {
      unavailable = true;
      return undefined;
    }
  }
  return thread;
}

class OffThreadSha256 implements IncrementalSha256 {
  readonly #id = nextId++;
  readonly #thread: HashThread;

  constructor(worker: HashThread) {
    this.#thread = worker;
  }

  async update(chunk: Uint8Array): Promise<void> {
    const reply = await this.#thread.request({ op: 'update', id: this.#id, data: chunk });
    if (reply.error !== undefined) throw new Error(`hashing failed: ${reply.error}`);
  }

  async digest(): Promise<Buffer> {
    const reply = await this.#thread.request({ op: 'digest', id: this.#id });
    if (reply.digest === undefined) throw new Error(`hashing failed: ${reply.error ?? 'no digest'}`);
    return Buffer.from(reply.digest);
  }

  dispose(): void {
    this.#thread.send({ op: 'drop', id: this.#id });
  }
}

class InThreadSha256 implements IncrementalSha256 {
  readonly #hash: Hash = createHash('sha256');

  update(chunk: Uint8Array): Promise<void> {
    this.#hash.update(chunk);
    return Promise.resolve();
  }

  digest(): Promise<Buffer> {
    return Promise.resolve(this.#hash.digest());
  }

  dispose(): void {
    // nothing held outside this object
  }
}

/** A SHA-256 computed on the hashing thread, or on this one if that cannot run. */
export function createSha256(options: { readonly offThread?: boolean } = {}): IncrementalSha256 {
  const worker = options.offThread === false ? undefined : hashThread();
  return worker === undefined ? new InThreadSha256() : new OffThreadSha256(worker);
}

/** Stops the hashing thread (tests); the next hash starts a new one. */
export async function stopHashThread(): Promise<void> {
  const current = thread;
  thread = undefined;
  await current?.terminate();
}
