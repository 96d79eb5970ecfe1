// nix.conf and netrc text edits: values merge into existing lines, nothing else changes, a second run is
// byte-identical, and netrc entries are replaced per host.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  addSubstituter,
  addTrustedPublicKeys,
  getSetting,
  setIfAbsent,
  setNetrcEntry,
} from '../../../src/client/nix-conf.js';

const URL_A = 'http://127.0.0.1:5000/main';
const KEY_A = 'host-main-1:Imv2z2mrgnZnYAcPriirpX3mrHwNga8WuxNYmahdemk=';
const KEY_B = 'host-main-2:/mDLgC4HfiHAnhFIXjSaP9yV6ibq68dupLKlZslgk04=';
const NIXOS_KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=';

const use = (text: string): string => addTrustedPublicKeys(addSubstituter(text, URL_A), [KEY_A, KEY_B]);

describe('nix.conf edits', () => {
  it('adds extra- lines to an empty file', () => {
    assert.equal(use(''), `extra-substituters = ${URL_A}\nextra-trusted-public-keys = ${KEY_A} ${KEY_B}\n`);
  });

  it('merges into existing extra- lines, keeping comments and other lines byte for byte', () => {
    const before = [
      '# my settings',
      'substituters = https://cache.nixos.org/',
      `trusted-public-keys = ${NIXOS_KEY}`,
      'extra-substituters = https://other.example   # another cache',
      'extra-trusted-public-keys = other-1:AAAA',
      'max-jobs = 4',
      '',
    ].join('\n');
    const after = use(before);
    assert.equal(
      after,
      [
        '# my settings',
        'substituters = https://cache.nixos.org/',
        `trusted-public-keys = ${NIXOS_KEY}`,
        `extra-substituters = https://other.example ${URL_A}   # another cache`,
        `extra-trusted-public-keys = other-1:AAAA ${KEY_A} ${KEY_B}`,
        'max-jobs = 4',
        '',
      ].join('\n'),
    );
    assert.equal(use(after), after, 'second run is byte-identical');
  });

  it('never touches a plain substituters line and never removes cache.nixos.org', () => {
    const before = `substituters = https://cache.nixos.org/\ntrusted-public-keys = ${NIXOS_KEY}\n`;
    const after = use(before);
    assert.ok(after.startsWith(before));
    assert.match(after, /^extra-substituters = http:\/\/127\.0\.0\.1:5000\/main$/m);
  });

  it('treats a URL or key present anywhere (substituters, trailing slash) as present', () => {
    const before = `substituters = ${URL_A}/ https://cache.nixos.org\ntrusted-public-keys = ${KEY_A}\n`;
    const after = use(before);
    assert.equal(after, `${before}extra-trusted-public-keys = ${KEY_B}\n`);
  });

  it('adds only the missing keys of a cache with several', () => {
    const once = addTrustedPublicKeys('', [KEY_A]);
    assert.equal(
      addTrustedPublicKeys(once, [KEY_A, KEY_B]),
      `extra-trusted-public-keys = ${KEY_A} ${KEY_B}\n`,
    );
  });

  it('appends to the last of several lines of the same name, and handles a file without final newline', () => {
    const before = 'extra-substituters = a\nextra-substituters = b';
    assert.equal(addSubstituter(before, URL_A), `extra-substituters = a\nextra-substituters = b ${URL_A}`);
    assert.equal(addSubstituter('max-jobs = 1', URL_A), `max-jobs = 1\nextra-substituters = ${URL_A}\n`);
  });

  it('does not mistake commented-out settings or similar names for the setting', () => {
    const before = `# extra-substituters = ${URL_A}\nextra-substituters-foo = x\n`;
    assert.equal(addSubstituter(before, URL_A), `${before}extra-substituters = ${URL_A}\n`);
  });

  it('fills an empty setting line', () => {
    assert.equal(addSubstituter('extra-substituters =\n', URL_A), `extra-substituters = ${URL_A}\n`);
  });

  it('reads the last value of a setting, ignoring comments', () => {
    const text = 'netrc-file = /a # first\nnetrc-file = /b\n';
    assert.equal(getSetting(text, 'netrc-file'), '/b');
    assert.equal(getSetting('# netrc-file = /a\n', 'netrc-file'), undefined);
    assert.equal(setIfAbsent(text, 'netrc-file', '/c'), text);
    assert.equal(setIfAbsent('', 'netrc-file', '/c'), 'netrc-file = /c\n');
  });
});

describe('netrc edits', () => {
  it('adds an entry to an empty or missing file', () => {
    const edit = setNetrcEntry('', '127.0.0.1', 'niche', 'tok1');
    assert.deepEqual(edit, { text: 'machine 127.0.0.1 login niche password tok1\n', action: 'added' });
  });

  it('is idempotent and keeps other entries and comments', () => {
    const before =
      '# credentials\nmachine github.com login me password gh\n\nmachine 127.0.0.1 login niche password tok1\n';
    assert.deepEqual(setNetrcEntry(before, '127.0.0.1', 'niche', 'tok1'), {
      text: before,
      action: 'unchanged',
    });
  });

  it('replaces the entry for the same host, including a multi-line one, and nothing else', () => {
    const before = [
      'machine github.com login me password gh',
      'machine 127.0.0.1',
      '  login old',
      '  password secret-old',
      'machine example.org login x password y',
      '',
    ].join('\n');
    const edit = setNetrcEntry(before, '127.0.0.1', 'niche', 'tok2');
    assert.equal(edit.action, 'replaced');
    assert.equal(
      edit.text,
      [
        'machine github.com login me password gh',
        'machine 127.0.0.1 login niche password tok2',
        'machine example.org login x password y',
        '',
      ].join('\n'),
    );
    assert.equal(setNetrcEntry(edit.text, '127.0.0.1', 'niche', 'tok2').text, edit.text);
  });

  it('puts a new entry before a default entry (curl stops there)', () => {
    const before = 'machine a login b password c\ndefault login anon password x\n';
    const edit = setNetrcEntry(before, 'h', 'niche', 't');
    assert.equal(
      edit.text,
      'machine a login b password c\nmachine h login niche password t\ndefault login anon password x\n',
    );
  });

  it('does not treat a host name inside a macdef body or a comment as an entry', () => {
    const before =
      '# machine h login niche password old\nmacdef init\nmachine h\n\nmachine z login a password b\n';
    const edit = setNetrcEntry(before, 'h', 'niche', 't');
    assert.equal(edit.action, 'added');
    assert.equal(edit.text, `${before}machine h login niche password t\n`);
  });

  it('refuses values that cannot be written into a netrc', () => {
    assert.throws(() => setNetrcEntry('', 'h', 'niche', 'has space'));
    assert.throws(() => setNetrcEntry('', 'h', 'niche', ''));
  });
});
