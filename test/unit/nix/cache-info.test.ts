import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatCacheInfo, parseCacheInfo } from '../../../src/nix/cache-info.js';
import { assertNixError } from './expect-error.js';

describe('nix-cache-info', () => {
  it('formats the file as cache.nixos.org does', () => {
    assert.equal(
      formatCacheInfo({ storeDir: '/nix/store', wantMassQuery: true, priority: 40 }),
      'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n',
    );
    assert.equal(
      formatCacheInfo({ storeDir: '/opt/store', wantMassQuery: false, priority: -3 }),
      'StoreDir: /opt/store\nWantMassQuery: 0\nPriority: -3\n',
    );
  });

  it('refuses values it cannot write', () => {
    assertNixError(
      () => formatCacheInfo({ storeDir: '/nix/store', wantMassQuery: true, priority: 1.5 }),
      'CACHE_INFO_INVALID',
    );
    assertNixError(
      () => formatCacheInfo({ storeDir: 'relative', wantMassQuery: true, priority: 1 }),
      'CACHE_INFO_INVALID',
    );
    assertNixError(
      () => formatCacheInfo({ storeDir: '/a\nPriority: 1', wantMassQuery: true, priority: 1 }),
      'CACHE_INFO_INVALID',
    );
  });

  it('round-trips', () => {
    const info = { storeDir: '/nix/store', wantMassQuery: true, priority: 41 };
    assert.deepEqual(parseCacheInfo(formatCacheInfo(info)), info);
  });

  it('parses leniently, like Nix', () => {
    assert.deepEqual(
      parseCacheInfo(
        'StoreDir:/nix/store  \r\n\n\nno colon here\nWantMassQuery: yes\nFoo: bar\nPriority:  7 \n',
      ),
      {
        storeDir: '/nix/store',
        wantMassQuery: false,
        priority: 7,
      },
    );
    assert.deepEqual(parseCacheInfo(''), {
      storeDir: undefined,
      wantMassQuery: undefined,
      priority: undefined,
    });
    assert.deepEqual(parseCacheInfo('StoreDir: /nix/store'), {
      storeDir: '/nix/store',
      wantMassQuery: undefined,
      priority: undefined,
    });
  });

  it('rejects a Priority that is not an integer', () => {
    for (const value of ['high', '4.5', '', '1e3', '99999999999999999999']) {
      assertNixError(() => parseCacheInfo(`Priority: ${value}\n`), 'CACHE_INFO_INVALID', /Priority/);
    }
  });
});
