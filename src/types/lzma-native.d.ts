// Minimal typings for the parts of lzma-native niche uses (the package ships none): its compressor only.
// Decoding goes through niche's own bounded decoders (src/util/decoder-codecs.ts).
declare module 'lzma-native' {
  import type { Transform } from 'node:stream';

  interface LzmaStreamOptions {
    /** Compression preset 0-9. */
    preset?: number;
    /** Worker threads for compression (liblzma multi-threaded encoder); 0 = one per core. */
    threads?: number;
  }

  export function createCompressor(options?: LzmaStreamOptions): Transform;

  const lzma: {
    createCompressor: typeof createCompressor;
  };
  export default lzma;
}
