// The worked examples of PROTOCOL.md §3.1 and §4.5, verbatim, shared by the narinfo and signing tests.

import { createHash } from 'node:crypto';

/** §3.1: written by Nix 2.8 `nix copy`, signed by test-cache-1. */
export const TOP_NARINFO = `StorePath: /nix/store/drzf5mxrxkfzn0z8jrp3p0gvfbbg9kkz-top.txt
URL: nar/04ap2vi33cay0b1i9bcq3x6fr1ygcyrxbxzscsy1za13aqc3mlmq.nar.xz
Compression: xz
FileHash: sha256:04ap2vi33cay0b1i9bcq3x6fr1ygcyrxbxzscsy1za13aqc3mlmq
FileSize: 216
NarHash: sha256:1zzqjk0fdcpxndvzn3pfd4g2bnjmawzdc6pnmczgandmzqw0005f
NarSize: 224
References: fr7p0q8v2c3dnhf9jilmhr4zq2xy4h66-dir xrabnx1r49hn890prhx86h6iyn19p976-hello.txt
Sig: test-cache-1:r4BfnN1PrSfP34vQmSTRW3D6VY6nZhKh8rqWTXHNqqzHubnksD0lRvphMGIogad8egvyPRDkrnZNppD1WuHVBQ==
CA: text:sha256:19p4w1b38x13gmr0i7s34p1jk45cn63ay31nh7bbif67y2jf0bg3
`;
export const TOP_FINGERPRINT =
  '1;/nix/store/drzf5mxrxkfzn0z8jrp3p0gvfbbg9kkz-top.txt;sha256:1zzqjk0fdcpxndvzn3pfd4g2bnjmawzdc6pnmczgandmzqw0005f;224;/nix/store/fr7p0q8v2c3dnhf9jilmhr4zq2xy4h66-dir,/nix/store/xrabnx1r49hn890prhx86h6iyn19p976-hello.txt';
export const TEST_CACHE_PUBLIC_KEY = 'test-cache-1:Imv2z2mrgnZnYAcPriirpX3mrHwNga8WuxNYmahdemk=';

/** §4.5: the deterministic key, seed = sha256("nix-binary-cache-spec-example"). */
export const EXAMPLE_SEED = createHash('sha256').update('nix-binary-cache-spec-example').digest();
export const EXAMPLE_SECRET_KEY =
  'example.org-1:J8IhI+w5cc/Ook7oL/GmI6JdDo1fBbQe+O5okL+26k/+YMuALgd+IcCeEUheNJo/3JXqJurrx26ksqVmyWCTTg==';
export const EXAMPLE_PUBLIC_KEY = 'example.org-1:/mDLgC4HfiHAnhFIXjSaP9yV6ibq68dupLKlZslgk04=';

export const HELLO_NARINFO = `StorePath: /nix/store/x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1
URL: nar/1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq.nar
Compression: none
FileHash: sha256:1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq
FileSize: 128
NarHash: sha256:1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq
NarSize: 128
References: 
Deriver: c8y63vz5q03xldyswax0hw5ijvsgavla-hello-2.12.1.drv
Sig: example.org-1:TzNNxD0YyFSF1Bk2btiaT7uKJf4ZQ+1EUmgoIn0/qduJ/nSyytWGu+nfdt+4HSTZLk3k0aoJTqX42dW+m3zXCw==
`;
export const HELLO_FINGERPRINT =
  '1;/nix/store/x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1;sha256:1kky6dc5n4sjgmxja7hnbzc718hf0anqj3qc3l9w9gwcifd3fjaq;128;';

export const TOOL_NARINFO = `StorePath: /nix/store/zjbl1040pl4yh4178srp8zrfqlzg24ca-example-tool-1.0
URL: nar/1w7p4iivmkaz0djvlb958kybgllnfm00mbwwqzrjdwzbgdwj1bfh.nar.xz
Compression: xz
FileHash: sha256:1w7p4iivmkaz0djvlb958kybgllnfm00mbwwqzrjdwzbgdwj1bfh
FileSize: 260
NarHash: sha256:1q1fwxbfmcxckh2lrvwn43ppi5mm3y6qrkbmls1cys7y1905m102
NarSize: 888
References: x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1 zjbl1040pl4yh4178srp8zrfqlzg24ca-example-tool-1.0
Sig: example.org-1:g6iJK0MEwElgvjv0aNXQrJenUZep5FSWEBcPwj5c+gV42bsivdmLYDeQcyrvzXvXasJDpyMVByUvpu4zbUG5DQ==
`;
export const TOOL_FINGERPRINT =
  '1;/nix/store/zjbl1040pl4yh4178srp8zrfqlzg24ca-example-tool-1.0;sha256:1q1fwxbfmcxckh2lrvwn43ppi5mm3y6qrkbmls1cys7y1905m102;888;/nix/store/x3waw7blqyq7xc9nq9aja403pxc610za-hello-2.12.1,/nix/store/zjbl1040pl4yh4178srp8zrfqlzg24ca-example-tool-1.0';
