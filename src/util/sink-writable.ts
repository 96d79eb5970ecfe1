// A Writable around plain functions: each chunk goes to `write` (synchronous; a throw fails the stream),
// and `final` runs at the end. For consumers that do their work as a chunk arrives (hashing, parsing) and
// also work without a stream, such as the NAR verifier of src/cache/nar-upload.ts.
import { Writable } from 'node:stream';

export function sinkWritable(
  write: (chunk: Buffer) => void,
  options: { readonly final?: () => void; readonly highWaterMark?: number } = {},
): Writable {
  const { final } = options;
  return new Writable({
    ...(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark }),
    write(chunk: Buffer, _encoding, callback): void {
      try {
        write(chunk);
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
    final(callback): void {
      try {
        final?.();
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
  });
}
