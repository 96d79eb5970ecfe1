// The memory check: a NAR of several GiB (compression none) streamed into niche with PUT and back out with
// GET, while niche's resident set is watched. The NAR is made with niche's own writer over one sparse
// file, twice: once to learn its sha256 (the upload's file name), once as the request body, so the
// benchmark never holds or stores it.

import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { narFromPath } from '../src/nix/nar-writer.js';
import { encodeNix32 } from '../src/nix/nix32.js';
import { memoryOf } from './proc.js';
import { withLoad } from './load.js';
import type { HugeResult, Loaded, PhasePeak } from './report.js';

export interface HugeOptions {
  readonly pid: number;
  /** `http://127.0.0.1:port` of niche. */
  readonly origin: string;
  readonly token: string;
  /** Where the sparse source file goes. */
  readonly file: string;
  readonly bytes: number;
}

/** Polls VmRSS; `stop()` returns the highest value seen. */
function watchRss(pid: number): { stop: () => number } {
  let peak = memoryOf(pid).rss;
  const timer = setInterval(() => {
    peak = Math.max(peak, memoryOf(pid).rss);
  }, 50);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(peak, memoryOf(pid).rss);
    },
  };
}

/** Resets the kernel's peak-RSS counter (VmHWM); false if not permitted. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

async function measure(
  pid: number,
  work: () => Promise<void>,
  bytes: number,
): Promise<Loaded<PhasePeak> & { reset: boolean }> {
  const reset = resetPeak(pid);
  const watch = watchRss(pid);
  const started = performance.now();
  let polled: number;
  let otherCores: number;
  try {
    ({ otherCores } = await withLoad(work));
  } finally {
    polled = watch.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  const peakRss = reset ? Math.max(polled, memoryOf(pid).hwm) : polled;
  return { seconds, megabytesPerSecond: bytes / seconds / 1e6, peakRss, reset, otherCores };
}

function withoutReset({ reset: _reset, ...peak }: Loaded<PhasePeak> & { reset: boolean }): Loaded<PhasePeak> {
  return peak;
}

export async function hugeNarRoundTrip(options: HugeOptions): Promise<HugeResult> {
  const fd = openSync(options.file, 'w');
  try {
    ftruncateSync(fd, options.bytes);
  } finally {
    closeSync(fd);
  }
  const hash = createHash('sha256');
  let narBytes = 0;
  for await (const chunk of narFromPath(options.file)) {
    const buffer = chunk as Buffer;
    hash.update(buffer);
    narBytes += buffer.length;
  }
  const name = `${encodeNix32(hash.digest())}.nar`;
  const url = new URL(`/main/nar/${name}`, options.origin);
  const rssBefore = memoryOf(options.pid).rss;

  const upload = await measure(
    options.pid,
    async () => {
      const req = request(url, {
        method: 'PUT',
        headers: {
          authorization: `Bearer ${options.token}`,
          'content-type': 'application/x-nix-nar',
          'content-length': String(narBytes),
        },
      });
      const answered = new Promise<number>((resolve, reject) => {
        req.once('response', (response) => {
          response.resume();
          response.once('end', () => {
            resolve(response.statusCode ?? 0);
          });
          response.once('error', reject);
        });
        req.once('error', reject);
      });
      await pipeline(narFromPath(options.file), req);
      const status = await answered;
      if (status < 200 || status > 299) throw new Error(`PUT ${url.pathname} answered ${status}`);
    },
    narBytes,
  );

  const download = await measure(
    options.pid,
    () =>
      new Promise<void>((resolve, reject) => {
        // The NAR has no narinfo: only a token that may push sees it.
        const authorization = `Bearer ${options.token}`;
        const req = request(url, { method: 'GET', headers: { authorization } }, (response) => {
          let received = 0;
          response.on('data', (chunk: Buffer) => {
            received += chunk.length;
          });
          response.once('error', reject);
          response.once('end', () => {
            if (response.statusCode !== 200 || received !== narBytes) {
              reject(
                new Error(
                  `GET ${url.pathname}: status ${response.statusCode}, ${received} of ${narBytes} bytes`,
                ),
              );
            } else {
              resolve();
            }
          });
        });
        req.once('error', reject);
        req.end();
      }),
    narBytes,
  );

  const method =
    upload.reset && download.reset
      ? 'VmHWM reset via /proc/<pid>/clear_refs before each phase, plus VmRSS polled every 50 ms'
      : 'VmRSS polled every 50 ms (could not reset VmHWM)';
  return {
    narBytes,
    rssBefore,
    upload: withoutReset(upload),
    download: withoutReset(download),
    method,
  };
}
