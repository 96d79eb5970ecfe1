// Realisations in both forms Nix writes (PROTOCOL.md §7.2). The build-trace fixtures are Nix's own test
// data (src/libstore-tests/data/realisation/ in NixOS/nix): the fingerprint text, and the signature its
// test key makes of it (Ed25519 signatures are deterministic), so niche signs what Nix 2.35+ verifies.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildTraceFingerprint,
  buildTraceId,
  buildTraceKey,
  formatBuildTrace,
  parseBuildTrace,
  parseBuildTraceId,
  parseRealisation,
} from '../../../src/nix/realisation.js';
import { SecretKey } from '../../../src/nix/signing.js';
import { assertNixError } from './expect-error.js';

const drv = 'g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv';
const outPath = 'g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo';
const nixTestKey = SecretKey.parse(
  'test-key:tU7tTvLcScf8pmz/eTV0BEtLmRsPpZfKaRcd0nCN+pysBZPHSeg61/u2oc7mIOewfuAY1V1BiX32homTaDJ2Jw==',
);

describe('build traces (Nix 2.35+)', () => {
  it('fingerprints and signs exactly as Nix does', () => {
    const key = buildTraceKey(drv, 'foo.doi');
    assert.deepEqual(key, { drv, outputName: 'foo' });
    const fingerprint = buildTraceFingerprint(key, outPath);
    assert.equal(
      fingerprint,
      '{"key":{"drvPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv","outputName":"foo"},"value":{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo"}}',
    );
    assert.equal(
      nixTestKey.sign(fingerprint),
      'test-key:WsjxK4/EI74COtzMDI+VCjQU9O4FydK0+YeY1CE5hUevogd+T+CPvNXza7oog3GTMS+ZlBwsC2S3ppwusKnJDg==',
    );
  });

  it('reads both signature forms and writes Nix’s', () => {
    const sig = `${'A'.repeat(86)}==`;
    const fromObjects = parseBuildTrace(
      JSON.stringify({
        outPath,
        signatures: [
          { keyName: 'asdf', sig },
          { keyName: 'asdf', sig },
        ],
      }),
    );
    assert.deepEqual(fromObjects, { outPath, signatures: [`asdf:${sig}`] });
    assert.deepEqual(parseBuildTrace(JSON.stringify({ outPath, signatures: [`asdf:${sig}`] })), fromObjects);
    assert.deepEqual(parseBuildTrace(JSON.stringify({ outPath })), { outPath, signatures: [] });
    // Nix's order: by key name, then by signature bytes.
    const b = nixTestKey.sign('x');
    assert.equal(
      formatBuildTrace({ outPath, signatures: [b, `asdf:${sig}`] }),
      `{"outPath":"${outPath}","signatures":[{"keyName":"asdf","sig":"${sig}"},{"keyName":"test-key","sig":"${b.slice(9)}"}]}`,
    );
  });

  it('refuses what is not a build trace', () => {
    assertNixError(() => parseBuildTrace('['), 'REALISATION_INVALID');
    assertNixError(
      () => parseBuildTrace(JSON.stringify({ outPath: `/nix/store/${outPath}` })),
      'REALISATION_INVALID',
    );
    assertNixError(
      () => parseBuildTrace(JSON.stringify({ outPath, signatures: [1] })),
      'REALISATION_INVALID',
    );
    assertNixError(
      () => parseBuildTrace(JSON.stringify({ outPath, signatures: [{ keyName: 'k', sig: 'AAAA' }] })),
      'SIGNATURE_INVALID',
    );
    assert.equal(buildTraceKey(outPath, 'out.doi'), undefined, 'not a derivation');
    assert.equal(buildTraceKey(drv, 'out'), undefined);
    assert.equal(buildTraceKey(drv, 'o/ut.doi'), undefined);
    assert.equal(buildTraceKey(`x${drv}`, 'out.doi'), undefined);
  });

  it('keeps traces apart from older realisation ids', () => {
    const key = { drv, outputName: 'out' };
    assert.equal(buildTraceId(key), `${drv}^out`);
    assert.deepEqual(parseBuildTraceId(buildTraceId(key)), key);
    assert.equal(parseBuildTraceId(`sha256:${'7a'.repeat(32)}!out`), undefined);
    assertNixError(
      () => parseRealisation(JSON.stringify({ id: buildTraceId(key), outPath, signatures: [] })),
      'REALISATION_INVALID',
    );
  });
});
