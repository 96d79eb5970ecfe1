import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseSshPublicKey } from '../../../src/cache/ssh-keys.js';
import { isNicheError } from '../../../src/errors.js';
import { makeTempDir, type TempDir } from '../../helpers/tmp.js';

function sshString(data: Buffer | string): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** An ed25519 public key line built from node:crypto's raw key. */
function ed25519Line(comment = ''): string {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const blob = Buffer.concat([sshString('ssh-ed25519'), sshString(raw)]);
  return `ssh-ed25519 ${blob.toString('base64')}${comment === '' ? '' : ` ${comment}`}`;
}

function refusal(text: string): string {
  try {
    parseSshPublicKey(text);
  } catch (error) {
    assert.ok(isNicheError(error) && error.code === 'SSH_KEY_INVALID', String(error));
    return error.message;
  }
  assert.fail(`accepted ${text.slice(0, 80)}`);
}

function haveSshKeygen(): boolean {
  try {
    execFileSync('ssh-keygen', ['-?'], { stdio: 'ignore' });
  } catch (error) {
    return (error as { code?: string }).code !== 'ENOENT';
  }
  return true;
}

describe('parseSshPublicKey', () => {
  let dir: TempDir;
  before(async () => {
    dir = await makeTempDir('ssh-keys');
  });
  after(async () => {
    await dir.cleanup();
  });

  it(
    'reads keys ssh-keygen wrote, with the fingerprint ssh-keygen prints',
    {
      skip:
        !haveSshKeygen() && process.env.CI !== 'true'
          ? 'ssh-keygen (openssh-client) is not installed'
          : false,
    },
    () => {
      for (const [type, algorithm] of [
        ['ed25519', 'ssh-ed25519'],
        ['ecdsa', 'ecdsa-sha2-nistp256'],
        ['rsa', 'ssh-rsa'],
      ] as const) {
        const file = join(dir.path, `id_${type}`);
        execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', `alice@${type}`, '-f', file]);
        const line = readFileSync(`${file}.pub`, 'utf8');
        const key = parseSshPublicKey(line);
        assert.equal(key.algorithm, algorithm);
        assert.equal(key.comment, `alice@${type}`);
        assert.equal(`${key.line} alice@${type}\n`, line);
        const printed = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`], {
          encoding: 'utf8',
        });
        assert.equal(printed.split(' ')[1], key.fingerprint, printed);
      }
    },
  );

  it('keeps the comment apart and normalises the line', () => {
    const line = ed25519Line();
    const key = parseSshPublicKey(`  ${line}\talice@laptop  with spaces \n`);
    assert.equal(key.line, line);
    assert.equal(key.comment, 'alice@laptop with spaces');
    assert.match(key.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.equal(parseSshPublicKey(line).comment, '');
  });

  it('refuses what is not one public key, saying why', () => {
    const line = ed25519Line();
    const [, data = ''] = line.split(' ');
    assert.match(refusal(''), /empty/);
    assert.match(refusal('-----BEGIN OPENSSH PRIVATE KEY-----'), /private key/);
    assert.match(refusal(`restrict,command="x" ${line}`), /unknown key type/);
    assert.match(refusal(`ssh-dss ${data}`), /unknown key type/);
    assert.match(refusal('ssh-ed25519 not*base64'), /not base64/);
    assert.match(refusal(`ssh-rsa ${data}`), /a ssh-ed25519 key, not ssh-rsa/);
    assert.match(refusal(`ssh-ed25519 ${Buffer.from('short').toString('base64')}`), /malformed/);
    const truncated = Buffer.from(data, 'base64').subarray(0, 40);
    assert.match(refusal(`ssh-ed25519 ${truncated.toString('base64')}`), /32 bytes/);
    assert.match(refusal(`${line}\n${line}`), /one line/);
    assert.match(refusal(`ssh-ed25519 ${'A'.repeat(9000)}`), /longer than/);
  });
});
