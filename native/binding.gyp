# The native decoders of src/util/pull-decoder.ts, built by `npm ci` (the package's install script) against
# the system's liblzma, libzstd and libbz2 (Debian: liblzma-dev, libzstd-dev, libbz2-dev), the durable
# small-file writes of src/storage/fs/fs-blob-store.ts, and the TCP counters of src/http/deadlines.ts.
# Node-API only: one build serves every Node version niche supports.
{
  'targets': [
    {
      'target_name': 'niche_decoders',
      'sources': ['src/decoders.c'],
      'libraries': ['-llzma', '-lzstd', '-lbz2'],
      'cflags': ['-std=c11', '-Wall', '-Wextra', '-fvisibility=hidden'],
      'defines': ['_DEFAULT_SOURCE'],
    },
    {
      'target_name': 'niche_files',
      'sources': ['src/files.c'],
      'cflags': ['-std=c11', '-Wall', '-Wextra', '-fvisibility=hidden'],
      'defines': ['_GNU_SOURCE'],
    },
    {
      'target_name': 'niche_sockets',
      'sources': ['src/sockets.c'],
      'cflags': ['-std=c11', '-Wall', '-Wextra', '-fvisibility=hidden'],
      'defines': ['_DEFAULT_SOURCE'],
    },
  ],
}
