// The fast narinfo renderer must produce exactly what the strict parser (and so Nix) accepts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderNarInfo } from '../../../src/cache/narinfo-render.js';
import type { PathWithNar } from '../../../src/db/metadata-store.js';
import { formatNarInfo, parseNarInfo } from '../../../src/nix/narinfo.js';

const stored: Pick<PathWithNar, 'path' | 'nar'> = {
  path: {
    hashPart: 'zjbl1040pl4yh4178srp8zrfqlzg24ca',
    storePath: '/nix/store/zjbl1040pl4yh4178srp8zrfqlzg24ca-example-tool-1.0',
    fileHash: '1w7p4iivmkaz0djvlb958kybgllnfm00mbwwqzrjdwzbgdwj1bfh',
    narHash: '1q1fwxbfmcxckh2lrvwn43ppi5mm3y6qrkbmls1cys7y1905m102',
    narSize: 888,
    references: [
      'x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1',
      'zjbl1040pl4yh4178srp8zrfqlzg24ca-example-tool-1.0',
    ],
    deriver: 'c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv',
    ca: undefined,
    signatures: [
      'example.org-1:g6iJK0MEwElgvjv0aNXQrJenUZep5FSWEBcPwj5c+gV42bsivdmLYDeQcyrvzXvXasJDpyMVByUvpu4zbUG5DQ==',
    ],
    createdAt: new Date(0),
  },
  nar: {
    fileHash: '1w7p4iivmkaz0djvlb958kybgllnfm00mbwwqzrjdwzbgdwj1bfh',
    fileSize: 260,
    compression: 'xz',
    narHash: '1q1fwxbfmcxckh2lrvwn43ppi5mm3y6qrkbmls1cys7y1905m102',
    narSize: 888,
    blobKey: 'nar/1w7p4iivmkaz0djvlb958kybgllnfm00mbwwqzrjdwzbgdwj1bfh',
  },
};

describe('renderNarInfo', () => {
  it('matches the canonical formatter byte for byte', () => {
    const text = renderNarInfo(stored);
    assert.equal(formatNarInfo(parseNarInfo(text)), text);
    assert.match(text, /^StorePath: .*\nURL: nar\/1w7p4.*\.nar\.xz\nCompression: xz\n/);
  });
  it('writes an empty References line and Compression none', () => {
    const text = renderNarInfo({
      path: {
        ...stored.path,
        references: [],
        deriver: undefined,
        signatures: [],
        ca: 'fixed:r:sha256:1q1fwxbfmcxckh2lrvwn43ppi5mm3y6qrkbmls1cys7y1905m102',
      },
      nar: { ...stored.nar, compression: 'none' },
    });
    assert.match(text, /\nReferences: \n/);
    assert.match(text, /URL: nar\/\w+\.nar\nCompression: none\n/);
    assert.equal(formatNarInfo(parseNarInfo(text)), text);
  });
});
