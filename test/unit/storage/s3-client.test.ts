// The AWS SDK's "needs Node 22 from 2027" warning is dropped, and nothing else is: each case runs in its own
// process (the SDK warns once per process) that pretends to be Node 20, so the SDK warns on any Node.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../../helpers/cli-process.js';
import { isKnownSdkNodeWarning } from '../../../src/storage/s3/s3-client.js';

const CLIENT_MODULE = pathToFileURL(`${REPO_ROOT}src/storage/s3/s3-client.ts`).href;

/** Runs `body` as Node "v20.0.0" with an S3 client config in scope; returns its stderr. */
function stderrOf(body: string): string {
  const script = `
    Object.defineProperty(process, 'version', { value: 'v20.0.0' });
    const { S3Client } = await import('@aws-sdk/client-s3');
    const { createS3Client } = await import(${JSON.stringify(CLIENT_MODULE)});
    const config = { region: 'us-east-1', endpoint: 'http://127.0.0.1:9', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } };
    ${body}
  `;
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  assert.equal(result.status, 0, result.stderr);
  return result.stderr;
}

describe('createS3Client', () => {
  it('the SDK itself warns on Node 20 (the case the filter is for)', () => {
    assert.match(stderrOf('new S3Client(config).destroy();'), /NodeVersionSupportWarning/);
  });

  it('drops exactly that warning, and other warnings still show', () => {
    const stderr = stderrOf(`
      createS3Client(config).destroy();
      createS3Client(config).destroy();
      process.emitWarning('an unrelated warning', 'OtherWarning');
      process.emitWarning('NodeVersionSupportWarning: from someone else');
    `);
    assert.doesNotMatch(stderr, /AWS SDK for JavaScript/);
    assert.match(stderr, /OtherWarning: an unrelated warning/);
    assert.match(stderr, /Warning: NodeVersionSupportWarning: from someone else/);
  });

  it('gives process.emitWarning back even when the constructor throws', () => {
    const stderr = stderrOf(`
      const before = process.emitWarning;
      const hostile = new Proxy({}, { get() { throw new Error('boom'); } });
      let thrown;
      try { createS3Client(hostile); } catch (error) { thrown = error; }
      if (thrown?.message !== 'boom') throw new Error('the constructor did not throw');
      if (process.emitWarning !== before) throw new Error('emitWarning was not restored');
      process.emitWarning('after', 'AfterWarning');
    `);
    assert.match(stderr, /AfterWarning: after/);
  });

  it('matches only the known text, not a future SDK warning about another Node version', () => {
    const known =
      'NodeVersionSupportWarning: The AWS SDK for JavaScript (v3)\nversions published after the first week of ' +
      'January 2027\nwill require node >=22. You are running node v20.20.2.\n';
    assert.equal(isKnownSdkNodeWarning(known), true);
    assert.equal(isKnownSdkNodeWarning(known.replace('>=22', '>=24')), false);
    assert.equal(isKnownSdkNodeWarning(new Error(known)), true);
    assert.equal(isKnownSdkNodeWarning('DeprecationWarning: something'), false);
  });
});
