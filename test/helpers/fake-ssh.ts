// A stand-in for the `ssh` program Nix runs for ssh:// and ssh-ng:// stores, so the end-to-end tests need
// no SSH server: a small Perl script (perl exists on the host and in the Nix 2.26 chroot, node does not)
// put first on PATH connects to a unix socket under /tmp, sends the user@host and the remote command as
// two lines, then relays its stdin to the socket and the socket's frames back: [type u8][length u32 BE]
// [payload], type 1 = stdout, 2 = stderr, 3 = exit status (u32 BE). The test's side of the socket runs a
// session per connection with whatever handler it is given.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { readChunk } from '../../src/util/read-chunk.js';

const SCRIPT = String.raw`#!/usr/bin/perl
use strict;
use warnings;
use IO::Socket::UNIX;
use IO::Select;
use Socket qw(SOCK_STREAM);

my $path = '@SOCKET@';
my @args = @ARGV;
my $host;
my %takes_value = map { $_ => 1 } qw(-o -p -l -i -F -S -O -E -J -L -R -D -W -b -c -e -m -Q -w);
my (%options, $control);
while (@args) {
  my $a = shift @args;
  if ($a eq '--') { last if defined $host; next; }
  if ($a =~ /^-o(.+)$/) { my ($k, $v) = split(/=/, $1, 2); $options{lc $k} = $v; next; }
  if ($a eq '-o') { my ($k, $v) = split(/=/, shift(@args) // '', 2); $options{lc $k} = $v; next; }
  if ($a eq '-O') { $control = shift @args; next; }
  if ($a =~ /^-/) { shift @args if $takes_value{$a}; next; }
  if (!defined $host) { $host = $a; next; }
  unshift @args, $a;
  last;
}
# Nix 2.26 first asks whether a master connection runs (ssh -O check): as OpenSSH without a ControlPath.
if (defined $control) { print STDERR "No ControlPath specified for \"-O\" command\n"; exit 255; }
my $command = join(' ', @args);
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path) or die "fake ssh: cannot connect to $path: $!\n";
binmode $s; binmode STDIN; binmode STDOUT; binmode STDERR;
sub put { my ($fh, $data) = @_; my $off = 0; while ($off < length $data) { my $n = syswrite($fh, $data, length($data) - $off, $off); die "fake ssh: write: $!\n" unless defined $n; $off += $n; } }
put($s, ($host // '') . "\n" . $command . "\n");
# Once connected, OpenSSH runs the LocalCommand on this side (Nix 2.26 waits for its 'echo started').
if (lc($options{permitlocalcommand} // 'no') eq 'yes' && defined $options{localcommand}) {
  system('/bin/sh', '-c', $options{localcommand});
}
my $sel = IO::Select->new(\*STDIN, $s);
my $buf = '';
while (1) {
  for my $fh ($sel->can_read) {
    if ($fh == $s) {
      my $n = sysread($s, my $data, 65536);
      exit 255 unless $n;
      $buf .= $data;
      while (length($buf) >= 5) {
        my ($type, $len) = unpack('CN', $buf);
        last if length($buf) < 5 + $len;
        my $payload = substr($buf, 5, $len);
        $buf = substr($buf, 5 + $len);
        if ($type == 1) { put(\*STDOUT, $payload); }
        elsif ($type == 2) { put(\*STDERR, $payload); }
        else { exit unpack('N', $payload); }
      }
    } else {
      my $n = sysread(STDIN, my $data, 65536);
      if (!$n) { $sel->remove(\*STDIN); shutdown($s, 1); }
      else { put($s, $data); }
    }
  }
}
`;

export interface FakeSshSession {
  /** What Nix passed as the host: `user@host`. */
  readonly destination: string;
  /** The remote command Nix asked to run. */
  readonly command: string;
  readonly input: Readable;
  readonly output: Writable;
  readonly stderr: Writable;
}

export interface FakeSsh {
  /** A directory holding `ssh`, to put first on PATH. */
  readonly binDir: string;
  /** The commands Nix asked to run, in order. */
  readonly commands: string[];
  close(): Promise<void>;
}

function frame(type: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

/** A writable that sends what is written to it as frames of `type` on the socket. */
function framedWritable(socket: Socket, type: number): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (socket.destroyed) {
        callback(new Error('the fake ssh client went away'));
        return;
      }
      if (socket.write(frame(type, chunk))) callback();
      else
        socket.once('drain', () => {
          callback();
        });
    },
  });
}

/** Reads the two header lines from the socket; returns them with the bytes after them. */
async function readHeader(socket: Socket): Promise<{ lines: string[]; rest: Buffer }> {
  let data = Buffer.alloc(0);
  for (;;) {
    const first = data.indexOf(10);
    const second = first === -1 ? -1 : data.indexOf(10, first + 1);
    if (second !== -1) {
      return {
        lines: [data.subarray(0, first).toString(), data.subarray(first + 1, second).toString()],
        rest: data.subarray(second + 1),
      };
    }
    const chunk = await readChunk(socket);
    if (chunk === null) throw new Error('the fake ssh client sent no header');
    data = Buffer.concat([data, chunk]);
  }
}

/** Starts the socket and writes the `ssh` script; `handle` runs each session and returns its exit status. */
export async function startFakeSsh(handle: (session: FakeSshSession) => Promise<number>): Promise<FakeSsh> {
  const dir = await mkdtemp(join(tmpdir(), 'niche-fake-ssh-'));
  const binDir = join(dir, 'bin');
  await mkdir(binDir);
  const socketPath = join(dir, 'sock');
  await writeFile(join(binDir, 'ssh'), SCRIPT.replace('@SOCKET@', socketPath), { mode: 0o755 });
  const commands: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    void (async () => {
      const { lines, rest } = await readHeader(socket);
      const [destination = '', command = ''] = lines;
      commands.push(command);
      const input = new Readable({ read: () => undefined });
      if (rest.length > 0) input.push(rest);
      socket.on('data', (chunk: Buffer) => input.push(chunk));
      socket.on('end', () => input.push(null));
      socket.resume();
      const status = await handle({
        destination,
        command,
        input,
        output: framedWritable(socket, 1),
        stderr: framedWritable(socket, 2),
      });
      const code = Buffer.alloc(4);
      code.writeUInt32BE(status);
      socket.end(frame(3, code));
    })().catch(() => {
      socket.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  return {
    binDir,
    commands,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
      await rm(dir, { recursive: true, force: true });
    },
  };
}
