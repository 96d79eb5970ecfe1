// The access rules, as a table: every principal kind x cache visibility x permission.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { authorize, tokenFromAuthorization, type Principal } from '../../../src/cache/auth.js';
import {
  cachePatternMatches,
  globMatches,
  parseCachePattern,
  permissionsFor,
} from '../../../src/cache/tokens.js';
import type { CacheRecord, Permission, TokenRecord } from '../../../src/db/metadata-store.js';
import { NicheError } from '../../../src/errors.js';

function cache(name: string, isPublic: boolean): CacheRecord {
  return {
    id: 1,
    name,
    isPublic,
    priority: 40,
    storeDir: '/nix/store',
    upstreamKeys: [],
    createdAt: new Date(0),
    retentionMs: undefined,
    maxSize: undefined,
  };
}

function token(scopes: TokenRecord['scopes']): Principal {
  return {
    kind: 'token',
    token: {
      id: 1,
      description: '',
      tokenHash: 'x',
      scopes,
      createdAt: new Date(0),
      expiresAt: undefined,
      revokedAt: undefined,
      sshKey: undefined,
    },
  };
}

function outcome(c: CacheRecord | undefined, name: string, principal: Principal, needed: Permission): string {
  try {
    authorize(c, name, principal, needed);
    return 'ok';
  } catch (error) {
    assert.ok(error instanceof NicheError);
    return error.code;
  }
}

describe('authorize', () => {
  const anonymous: Principal = { kind: 'anonymous' };
  const invalid: Principal = { kind: 'invalid', reason: 'token revoked' };
  const pushMain = token([{ cachePattern: 'main', permissions: ['pull', 'push'] }]);
  const pullAll = token([{ cachePattern: '*', permissions: ['pull'] }]);
  const union = token([
    { cachePattern: 'team-*', permissions: ['pull'] },
    { cachePattern: 'team-a', permissions: ['push'] },
  ]);
  const cases: [string, CacheRecord | undefined, Principal, Permission, string][] = [
    ['anonymous reads a public cache', cache('main', true), anonymous, 'pull', 'ok'],
    ['anonymous cannot push', cache('main', true), anonymous, 'push', 'TOKEN_MISSING'],
    ['anonymous cannot read a private cache', cache('main', false), anonymous, 'pull', 'TOKEN_MISSING'],
    ['anonymous learns nothing about a missing cache', undefined, anonymous, 'pull', 'TOKEN_MISSING'],
    ['a stale token still reads a public cache', cache('main', true), invalid, 'pull', 'ok'],
    ['a stale token cannot push', cache('main', true), invalid, 'push', 'TOKEN_INVALID'],
    ['a stale token cannot read a private cache', cache('main', false), invalid, 'pull', 'TOKEN_INVALID'],
    ['push token pushes', cache('main', false), pushMain, 'push', 'ok'],
    ['push token reads', cache('main', false), pushMain, 'pull', 'ok'],
    ['push token cannot delete', cache('main', false), pushMain, 'delete', 'PERMISSION_DENIED'],
    ['a token for main cannot see private other', cache('other', false), pushMain, 'pull', 'CACHE_NOT_FOUND'],
    ['... nor tell it from a missing cache', undefined, pushMain, 'pull', 'CACHE_NOT_FOUND'],
    ['a token for main reads public other', cache('other', true), pushMain, 'pull', 'ok'],
    ['... but cannot push to it', cache('other', true), pushMain, 'push', 'PERMISSION_DENIED'],
    ['wildcard pull', cache('x', false), pullAll, 'pull', 'ok'],
    ['wildcard pull cannot push', cache('x', false), pullAll, 'push', 'PERMISSION_DENIED'],
    ['union of matching scopes', cache('team-a', false), union, 'push', 'ok'],
    ['union only where both match', cache('team-b', false), union, 'push', 'PERMISSION_DENIED'],
  ];
  for (const [name, c, principal, needed, expected] of cases) {
    it(name, () => {
      assert.equal(outcome(c, c?.name ?? 'missing', principal, needed), expected);
    });
  }
});

describe('token scopes', () => {
  it('matches wildcards anywhere and escapes everything else', () => {
    assert.ok(cachePatternMatches('*', 'anything'));
    assert.ok(cachePatternMatches('team-*', 'team-a'));
    assert.ok(cachePatternMatches('*-ci', 'x-ci'));
    assert.ok(!cachePatternMatches('team-*', 'teamx'));
    assert.ok(!cachePatternMatches('main', 'main2'));
    assert.ok(!cachePatternMatches('a.c', 'abc'));
    assert.ok(!cachePatternMatches('a*a', 'a'));
    assert.ok(cachePatternMatches('a*a', 'aa'));
    assert.ok(cachePatternMatches('team-*-ci', 'team--ci'));
    assert.ok(cachePatternMatches('**', ''));
  });
  it('agrees with a regular expression on every short pattern and name', () => {
    const alphabet = ['a', 'b', '*'];
    const words = (length: number, letters: readonly string[]): string[] =>
      length === 0 ? [''] : words(length - 1, letters).flatMap((word) => letters.map((l) => word + l));
    const patterns = [0, 1, 2, 3, 4, 5].flatMap((length) => words(length, alphabet));
    const names = [0, 1, 2, 3, 4, 5].flatMap((length) => words(length, ['a', 'b']));
    for (const pattern of patterns) {
      const regex = new RegExp(`^${pattern.replaceAll('*', '.*')}$`);
      for (const name of names)
        assert.equal(globMatches(pattern, name), regex.test(name), `${pattern} ${name}`);
    }
  });
  it('matches in linear time: 10 * against a 10 kB name', () => {
    // A regex (or a backtracking matcher) takes exponential time in the number of * on such a near miss.
    const pattern = `${'*a'.repeat(10)}*b`;
    const name = 'a'.repeat(10_000);
    const started = performance.now();
    for (let round = 0; round < 10; round += 1) assert.equal(globMatches(pattern, name), false);
    assert.equal(globMatches(pattern, `${name}b`), true);
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 500, `11 matches took ${Math.round(elapsed)} ms`);
  });
  it('refuses patterns beyond the bounds, at creation and when stored', () => {
    assert.equal(parseCachePattern('team-*'), 'team-*');
    assert.equal(parseCachePattern(`${'x'.repeat(59)}*a*b`), `${'x'.repeat(59)}*a*b`);
    for (const pattern of ['', '*a*a*a*a*', 'x'.repeat(64), 'Team', 'a.b', '-x', 'a b']) {
      assert.throws(() => parseCachePattern(pattern), { code: 'CACHE_NAME_INVALID' }, pattern);
    }
    // Stored before the bounds existed: matches nothing, not even what it would have matched.
    assert.equal(cachePatternMatches('*a*a*a*a*a*', 'aaaaaaaaaaa'), false);
    assert.equal(cachePatternMatches('*a*a*a*a', 'aaaaaaaaaaa'), true);
  });
  it('unions permissions of all matching scopes', () => {
    const granted = permissionsFor(
      [
        { cachePattern: '*', permissions: ['pull'] },
        { cachePattern: 'main', permissions: ['push', 'delete'] },
        { cachePattern: 'other', permissions: ['cache-admin'] },
      ],
      'main',
    );
    assert.deepEqual([...granted].sort(), ['delete', 'pull', 'push']);
  });
});

describe('authorization header', () => {
  it('takes the token from basic auth (netrc) or bearer', () => {
    const secret = 'nch_abcdefghijklmnop';
    assert.deepEqual(tokenFromAuthorization(`Basic ${Buffer.from(`niche:${secret}`).toString('base64')}`), {
      token: secret,
    });
    assert.deepEqual(tokenFromAuthorization(`Bearer ${secret}`), { token: secret });
    assert.deepEqual(tokenFromAuthorization(undefined), {});
  });
  it('reports malformed credentials', () => {
    assert.ok(tokenFromAuthorization('Basic !!!').error);
    assert.ok(
      tokenFromAuthorization(`Basic ${Buffer.from('niche:hunter2 with spaces').toString('base64')}`).error,
    );
    assert.ok(tokenFromAuthorization('Digest abc').error);
    assert.ok(tokenFromAuthorization('Bearer a b').error);
  });
});
