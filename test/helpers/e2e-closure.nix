# A closure that exercises every NAR feature and reference shape, built without nixpkgs (test/helpers/nix-closure.ts).
#   top ─→ mid ─→ leaf        (a chain of references; mid also refers to itself)
#    ├──→ file                (a store path that is a single regular file)
#    └──→ link ─→ file        (a store path that is a symlink to another store path)
# `nonce` makes every test run's paths new, so nothing collides with earlier runs; `bigBytes` is the size
# of the incompressible file in leaf (0 for none).
{ nonce, bigBytes ? 0 }:
let
  mk = name: script: derivation {
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/bin:/usr/bin";
    args = [ "-c" "set -e\n${script}" ];
  };
  leaf = mk "niche-e2e-leaf" ''
    mkdir -p $out/nested/deeper/deepest $out/empty-dir
    printf 'hello from the leaf\n' > $out/nested/deeper/deepest/file.txt
    printf 'a\n' > $out/nested/a.txt
    : > $out/empty-file
    if [ ${toString bigBytes} -gt 0 ]; then head -c ${toString bigBytes} /dev/urandom > $out/big.bin; fi
  '';
  file = mk "niche-e2e-file" ''
    printf 'a store path that is one file\n' > $out
  '';
  link = mk "niche-e2e-link" ''
    ln -s ${file} $out
  '';
  mid = mk "niche-e2e-mid" ''
    mkdir -p $out/bin $out/share
    printf '#!/bin/sh\necho ${leaf}\n' > $out/bin/tool
    chmod +x $out/bin/tool
    ln -s ../bin/tool $out/share/relative-link
    ln -s ${leaf}/nested/deeper/deepest/file.txt $out/absolute-link
    echo $out > $out/share/self
  '';
in
mk "niche-e2e-top" ''
  mkdir $out
  echo ${mid} > $out/mid
  echo ${file} > $out/file
  echo ${link} > $out/link
''
