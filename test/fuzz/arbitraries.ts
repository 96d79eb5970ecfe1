// Generators for the fuzz test: file trees (as NARs), byte-level mutations, narinfo mutations and request
// lines. Values are small recipes rather than finished bytes, so that a failing case prints as something
// a person can read and replay.
import fc from 'fast-check';
import { COMPRESSIONS, type Compression } from '../../src/nix/compression.js';
import { NIX32_ALPHABET } from '../../src/nix/nix32.js';
import { sortedEntries, type NarNode } from './nar-model.js';

// --- file trees ---------------------------------------------------------------------------------------

/** File contents: random bytes, text, or long runs of one byte (highly compressible). */
const contents: fc.Arbitrary<Uint8Array> = fc.oneof(
  { arbitrary: fc.uint8Array({ maxLength: 2048 }), weight: 4 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 200 }).map((s) => Buffer.from(s)), weight: 2 },
  {
    arbitrary: fc
      .record({ byte: fc.integer({ min: 0, max: 255 }), length: fc.integer({ min: 0, max: 256 * 1024 }) })
      .map(({ byte, length }) => Buffer.alloc(length, byte)),
    weight: 1,
  },
);

const entryName: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 12 }),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 8 }),
  fc.constantFrom('a', 'A', 'a b', '.hidden', '...', '-', '0', '10', '9', 'é', '🙂', 'x'.repeat(255)),
);

const symlinkTarget: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).filter((s) => !s.includes('\0')),
  fc.constantFrom('/nix/store/xrabnx1r49hn890prhx86h6iyn19p976-hello', '../..', '.', '/', 'y'.repeat(4095)),
);

export const narTree: fc.Arbitrary<NarNode> = fc.letrec<{
  node: NarNode;
  regular: NarNode;
  symlink: NarNode;
  directory: NarNode;
}>((tie) => ({
  node: fc.oneof({ depthSize: 'small', maxDepth: 4 }, tie('regular'), tie('symlink'), tie('directory')),
  regular: fc.record({ type: fc.constant('regular'), executable: fc.boolean(), contents }),
  symlink: fc.record({ type: fc.constant('symlink'), target: symlinkTarget }),
  directory: fc.record({
    type: fc.constant('directory'),
    entries: fc.array(fc.tuple(entryName, tie('node')), { maxLength: 5 }).map(sortedEntries),
  }),
})).node;

export const compression: fc.Arbitrary<Compression> = fc.constantFrom(...COMPRESSIONS);

// --- byte mutations -------------------------------------------------------------------------------------

/** Positions are taken modulo the length of the buffer they apply to. */
export type Mutation =
  | { readonly kind: 'set'; readonly at: number; readonly value: number }
  | { readonly kind: 'truncate'; readonly at: number }
  | { readonly kind: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: 'delete'; readonly at: number; readonly length: number }
  | { readonly kind: 'duplicate'; readonly at: number; readonly length: number; readonly to: number }
  | { readonly kind: 'length-word'; readonly at: number; readonly value: bigint }
  | { readonly kind: 'append'; readonly bytes: Uint8Array };

const position = fc.nat();
export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('set'), at: position, value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate'), at: position }),
  fc.record({
    kind: fc.constant('insert'),
    at: position,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({ kind: fc.constant('delete'), at: position, length: fc.integer({ min: 1, max: 64 }) }),
  fc.record({
    kind: fc.constant('duplicate'),
    at: position,
    length: fc.integer({ min: 1, max: 256 }),
    to: position,
  }),
  fc.record({
    kind: fc.constant('length-word'),
    at: position,
    value: fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.constantFrom(0n, 1n, 255n, 2n ** 32n, 2n ** 53n, 2n ** 63n),
    ),
  }),
  fc.record({ kind: fc.constant('append'), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
);

export function applyMutation(data: Buffer, m: Mutation): Buffer {
  const at = (n: number, size = data.length): number => (size === 0 ? 0 : n % size);
  switch (m.kind) {
    case 'set': {
      if (data.length === 0) return data;
      const out = Buffer.from(data);
      const i = at(m.at);
      out[i] = out[i] === m.value ? (m.value + 1) & 0xff : m.value;
      return out;
    }
    case 'truncate':
      return data.subarray(0, at(m.at));
    case 'insert': {
      const i = at(m.at, data.length + 1);
      return Buffer.concat([data.subarray(0, i), m.bytes, data.subarray(i)]);
    }
    case 'delete': {
      const i = at(m.at);
      return Buffer.concat([data.subarray(0, i), data.subarray(i + m.length)]);
    }
    case 'duplicate': {
      const from = at(m.at);
      const to = at(m.to, data.length + 1);
      const piece = data.subarray(from, from + m.length);
      return Buffer.concat([data.subarray(0, to), piece, data.subarray(to)]);
    }
    case 'length-word': {
      if (data.length < 8) return data;
      const out = Buffer.from(data);
      out.writeBigUInt64LE(m.value, at(m.at, Math.floor(data.length / 8)) * 8);
      return out;
    }
    case 'append':
      return Buffer.concat([data, m.bytes]);
  }
}

export function applyMutations(data: Buffer, mutations: readonly Mutation[]): Buffer {
  return mutations.reduce(applyMutation, data);
}

// --- store paths and narinfos ---------------------------------------------------------------------------

export const storeHash: fc.Arbitrary<string> = fc.string({
  unit: fc.constantFrom(...Array.from(NIX32_ALPHABET)),
  minLength: 32,
  maxLength: 32,
});

const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?=';
export const storeName: fc.Arbitrary<string> = fc
  .string({ unit: fc.constantFrom(...Array.from(NAME_CHARS)), minLength: 1, maxLength: 40 })
  .filter((name) => !name.startsWith('.'));

/** A text value that is anything but well-formed: unicode, controls, very long. */
const oddValue: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.string({ unit: 'grapheme', maxLength: 60 }),
  fc.constantFrom(
    '',
    ' ',
    '0',
    '-1',
    '1e3',
    '18446744073709551616',
    'sha256:',
    'sha256:xyz',
    'md5:00',
    '\u0000',
    '\r',
  ),
  fc
    .record({ char: fc.constantFrom('a', 'é', '0', ' '), length: fc.integer({ min: 1_000, max: 1_200_000 }) })
    .map(({ char, length }) => char.repeat(length)),
);

/** Changes to a valid narinfo, applied to its lines in order. */
export type NarInfoMutation =
  | { readonly kind: 'drop'; readonly line: number }
  | { readonly kind: 'duplicate'; readonly line: number }
  | { readonly kind: 'swap'; readonly line: number; readonly with: number }
  | { readonly kind: 'value'; readonly line: number; readonly value: string }
  | { readonly kind: 'field'; readonly key: string; readonly value: string }
  | { readonly kind: 'reference'; readonly reference: OddReference }
  | { readonly kind: 'signature'; readonly signature: OddSignature }
  | { readonly kind: 'crlf' }
  | { readonly kind: 'no-final-newline' }
  | { readonly kind: 'bom' };

/** References that name no path, or not exactly one the cache serves. */
export type OddReference =
  | { readonly kind: 'base-wrong-name'; readonly name: string }
  | { readonly kind: 'self-other-name'; readonly name: string }
  | { readonly kind: 'absent'; readonly name: string }
  | { readonly kind: 'malformed'; readonly text: string }
  | { readonly kind: 'base-twice' }
  | { readonly kind: 'many'; readonly count: number };

export type OddSignature =
  | { readonly kind: 'garbage'; readonly text: string }
  | { readonly kind: 'other-key' }
  | { readonly kind: 'bad-bytes'; readonly keyName: string; readonly bytes: Uint8Array }
  | { readonly kind: 'many'; readonly count: number };

const oddReference: fc.Arbitrary<OddReference> = fc.oneof(
  fc.record({ kind: fc.constant('base-wrong-name'), name: storeName }),
  fc.record({ kind: fc.constant('self-other-name'), name: storeName }),
  fc.record({ kind: fc.constant('absent'), name: storeName }),
  fc.record({
    kind: fc.constant('malformed'),
    text: fc.oneof(oddValue, fc.constantFrom('x', '/nix/store/x', '-', 'a'.repeat(300))),
  }),
  fc.record({ kind: fc.constant('base-twice') }),
  fc.record({ kind: fc.constant('many'), count: fc.integer({ min: 2, max: 5000 }) }),
);

const oddSignature: fc.Arbitrary<OddSignature> = fc.oneof(
  fc.record({ kind: fc.constant('garbage'), text: oddValue }),
  fc.record({ kind: fc.constant('other-key') }),
  fc.record({
    kind: fc.constant('bad-bytes'),
    keyName: fc.oneof(
      fc.constantFrom('cache.nixos.org-1', 'x'),
      fc.string({ unit: 'grapheme-ascii', maxLength: 20 }),
    ),
    bytes: fc.uint8Array({ maxLength: 80 }),
  }),
  fc.record({ kind: fc.constant('many'), count: fc.integer({ min: 2, max: 500 }) }),
);

const FIELD_NAMES = [
  'StorePath',
  'URL',
  'Compression',
  'FileHash',
  'FileSize',
  'NarHash',
  'NarSize',
  'References',
  'Deriver',
  'System',
  'CA',
  'Sig',
];

export const narInfoMutation: fc.Arbitrary<NarInfoMutation> = fc.oneof(
  fc.record({ kind: fc.constant('drop'), line: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate'), line: fc.nat() }),
  fc.record({ kind: fc.constant('swap'), line: fc.nat(), with: fc.nat() }),
  { arbitrary: fc.record({ kind: fc.constant('value'), line: fc.nat(), value: oddValue }), weight: 3 },
  fc.record({
    kind: fc.constant('field'),
    key: fc.oneof(fc.constantFrom(...FIELD_NAMES), fc.string({ unit: 'grapheme', maxLength: 20 })),
    value: oddValue,
  }),
  { arbitrary: fc.record({ kind: fc.constant('reference'), reference: oddReference }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant('signature'), signature: oddSignature }), weight: 2 },
  fc.constant({ kind: 'crlf' as const }),
  fc.constant({ kind: 'no-final-newline' as const }),
  fc.constant({ kind: 'bom' as const }),
);

// --- requests ---------------------------------------------------------------------------------------------

/** One path segment: a meaningful one, or anything at all, raw or percent-encoded. */
const segment: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    'main',
    'nar',
    'api',
    'v1',
    'caches',
    'paths',
    'missing',
    'tokens',
    'whoami',
    'keys',
    'nix-cache-info',
    'local',
    'serve',
    'log',
    '',
  ),
  fc.constantFrom(
    '..',
    '.',
    '%2e%2e',
    '%2E.',
    '%2f',
    '%00',
    '%zz',
    '%',
    '%c0%af',
    '..%2f..%2fetc%2fpasswd',
    '~',
    '*',
  ),
  storeHash.map((hash) => `${hash}.narinfo`),
  fc
    .tuple(
      fc.string({ unit: fc.constantFrom(...Array.from(NIX32_ALPHABET)), minLength: 52, maxLength: 52 }),
      fc.constantFrom('', '.xz', '.zst', '.bz2', '.br', '.gz'),
    )
    .map(([hash, ext]) => `${hash}.nar${ext}`),
  fc.string({ unit: 'grapheme-ascii', maxLength: 30 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }).map((s) => encodeURIComponent(s)),
  fc.string({ unit: 'binary', maxLength: 20 }).map((s) => Buffer.from(s).toString('latin1')),
  fc.integer({ min: 200, max: 20_000 }).map((n) => 'a'.repeat(n)),
);

export interface RequestRecipe {
  readonly method: string;
  readonly target: string;
  readonly auth: 'none' | 'push-basic' | 'push-bearer' | 'garbage';
  readonly body: Uint8Array | undefined;
  readonly headers: readonly (readonly [string, string])[];
}

export const requestRecipe: fc.Arbitrary<RequestRecipe> = fc.record({
  method: fc.oneof(
    { arbitrary: fc.constantFrom('GET', 'HEAD', 'PUT', 'POST', 'DELETE'), weight: 5 },
    fc.constantFrom('PATCH', 'OPTIONS', 'TRACE', 'CONNECT', 'PROPFIND', 'get', 'G ET', 'X'.repeat(100)),
  ),
  target: fc.oneof(
    {
      arbitrary: fc.array(segment, { minLength: 1, maxLength: 6 }).map((parts) => `/${parts.join('/')}`),
      weight: 6,
    },
    fc
      .tuple(fc.array(segment, { maxLength: 4 }), fc.string({ unit: 'grapheme-ascii', maxLength: 30 }))
      .map(([parts, query]) => `/${parts.join('/')}?${query}`),
    fc.constantFrom(
      '*',
      '',
      'http://127.0.0.1/main/nix-cache-info',
      '//main//nix-cache-info',
      '/main/../api/v1/whoami',
    ),
  ),
  auth: fc.constantFrom('none', 'push-basic', 'push-bearer', 'garbage'),
  body: fc.option(fc.uint8Array({ maxLength: 512 }), { nil: undefined }),
  headers: fc.array(
    fc.tuple(
      fc.constantFrom(
        'Range',
        'Content-Type',
        'Accept-Encoding',
        'Expect',
        'Transfer-Encoding',
        'X-Forwarded-Proto',
        'If-None-Match',
      ),
      fc.oneof(
        fc.string({ unit: 'grapheme-ascii', maxLength: 40 }),
        fc.constantFrom(
          'bytes=0-',
          'bytes=-1',
          'bytes=5-1',
          'bytes=0-1,3-4',
          'application/json',
          'zstd',
          '100-continue',
          'chunked',
        ),
      ),
    ),
    { maxLength: 3 },
  ),
});
