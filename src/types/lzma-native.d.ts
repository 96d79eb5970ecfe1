// Minimal typings for the parts of lzma-native niche uses (the package ships none).
declare module 'lzma-native' {
  import type { Transform } from 'node:stream';

  interface LzmaStreamOptions {
    /** Compression preset 0-9. */
    preset?: number;
    /** Worker threads for compression (liblzma multi-threaded encoder); 0 = one per core. */
    threads?: number;
    /** Decoder memory limit in bytes. */
    memlimit?: number;
    synchronous?: boolean;
  }

  export function createDecompressor(options?: LzmaStreamOptions): Transform;
  export function createCompressor(options?: LzmaStreamOptions): Transform;

  const lzma: {
    createDecompressor: typeof createDecompressor;
    createCompressor: typeof createCompressor;
  };
  export default lzma;
}
