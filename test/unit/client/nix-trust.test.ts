// Whether the daemon will honour a user's extra-substituters: root, trusted-users entries (names, `*`,
// `@group`), trusted-substituters, single-user installs; and reading `nix show-config --json` (falling back
// to `nix config show --json` on newer Nix).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  judgeTrust,
  parseNixConfigJson,
  readNixTrustSettings,
  type NixTrustSettings,
  type UserIdentity,
} from '../../../src/client/nix-trust.js';
import { NixCommandError } from '../../../src/client/errors.js';

const URL_A = 'http://127.0.0.1:5000/main';
const alice: UserIdentity = { name: 'alice', uid: 1000, groups: ['alice', 'users'] };
const settings = (trustedUsers: string[], trustedSubstituters: string[] = []): NixTrustSettings => ({
  trustedUsers,
  trustedSubstituters,
  store: 'auto',
});

describe('judgeTrust', () => {
  it('trusts root, listed users, * and listed groups', () => {
    assert.equal(
      judgeTrust(settings(['root']), { name: 'root', uid: 0, groups: [] }, URL_A, false).kind,
      'ok',
    );
    assert.equal(judgeTrust(settings(['root', 'alice']), alice, URL_A, false).kind, 'ok');
    assert.equal(judgeTrust(settings(['*']), alice, URL_A, false).kind, 'ok');
    assert.equal(judgeTrust(settings(['root', '@users']), alice, URL_A, false).kind, 'ok');
  });

  it('accepts a substituter listed in trusted-substituters, and a single-user install', () => {
    assert.equal(judgeTrust(settings(['root'], [`${URL_A}/`]), alice, URL_A, false).kind, 'ok');
    assert.equal(judgeTrust(settings(['root']), alice, URL_A, true).kind, 'ok');
  });

  it('explains what to do otherwise', () => {
    const verdict = judgeTrust(settings(['root', '@wheel']), alice, URL_A, false);
    assert.equal(verdict.kind, 'untrusted');
    assert.match(verdict.why, /not a trusted user/);
    assert.match(verdict.why, /--system/);
    assert.match(verdict.why, /trusted-users/);
    assert.match(verdict.why, /trusted-substituters/);
  });
});

describe('reading nix settings', () => {
  const NIX_2_8 = JSON.stringify({
    'trusted-users': { aliases: [], defaultValue: ['root'], description: '…', value: ['root', '@wheel'] },
    'trusted-substituters': { aliases: ['trusted-binary-caches'], value: [] },
    store: { value: 'auto' },
  });

  it('parses nix show-config --json', () => {
    assert.deepEqual(parseNixConfigJson(NIX_2_8), {
      trustedUsers: ['root', '@wheel'],
      trustedSubstituters: [],
      store: 'auto',
    });
    assert.deepEqual(parseNixConfigJson('{"trusted-users":"root alice"}').trustedUsers, ['root', 'alice']);
  });

  it('falls back to nix config show --json, and reports the first error if both fail', async () => {
    const calls: string[] = [];
    const result = await readNixTrustSettings((args) => {
      calls.push(args.join(' '));
      return args[0] === 'show-config'
        ? Promise.reject(
            new NixCommandError('NIX_COMMAND_FAILED', "'show-config' is not a recognised command"),
          )
        : Promise.resolve(NIX_2_8);
    });
    assert.deepEqual(calls, ['show-config --json', 'config show --json']);
    assert.deepEqual(result.trustedUsers, ['root', '@wheel']);
    await assert.rejects(
      readNixTrustSettings(() => Promise.reject(new NixCommandError('NIX_UNAVAILABLE', 'no nix'))),
      { code: 'NIX_UNAVAILABLE' },
    );
  });
});
