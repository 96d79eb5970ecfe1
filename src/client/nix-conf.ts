// Pure text edits of nix.conf and netrc for `niche use`. Edits are minimal and idempotent: values are added
// to an existing line of the same setting (never a second line), nothing is removed or reordered, comments
// and unrelated lines stay byte-for-byte, and a second run returns the text unchanged.
//
// nix.conf syntax (Nix's Config::applyConfig): `#` starts a comment anywhere on a line; a setting is
// `name = value` with whitespace around `=`; list values are whitespace-separated; `extra-<name>` appends
// to `<name>`; `include`/`!include` lines pull in other files. netrc (curl's parser): whitespace-separated
// tokens, entries start with `machine <host>` or `default`, `macdef` bodies run to the next blank line.

/** Setting names that hold the same list (aliases Nix still accepts). */
const SUBSTITUTER_SETTINGS = [
  'substituters',
  'extra-substituters',
  'binary-caches',
  'extra-binary-caches',
  'trusted-substituters',
  'extra-trusted-substituters',
];
const PUBLIC_KEY_SETTINGS = [
  'trusted-public-keys',
  'extra-trusted-public-keys',
  'binary-cache-public-keys',
  'extra-binary-cache-public-keys',
];

interface SettingLine {
  readonly index: number;
  readonly name: string;
  readonly values: readonly string[];
  /** Where in the line the value part ends (before trailing blanks and any comment). */
  readonly valueEnd: number;
}

const SETTING = /^\s*([^\s=#]+)\s+=(?:\s|$)/;

function splitLines(text: string): string[] {
  return text.split('\n');
}

function settingLines(lines: readonly string[]): SettingLine[] {
  const result: SettingLine[] = [];
  lines.forEach((line, index) => {
    const hash = line.indexOf('#');
    const content = hash < 0 ? line : line.slice(0, hash);
    const match = SETTING.exec(content);
    if (match === null) return;
    const name = match[1] ?? '';
    const valueText = content.slice(match[0].length);
    result.push({
      index,
      name,
      values: valueText.split(/\s+/).filter((value) => value !== ''),
      valueEnd: content.trimEnd().length,
    });
  });
  return result;
}

/** The value of the last `name = …` line (as Nix applies them in order), or undefined. */
export function getSetting(text: string, name: string): string | undefined {
  const lines = settingLines(splitLines(text)).filter((line) => line.name === name);
  const last = lines.at(-1);
  return last === undefined ? undefined : last.values.join(' ');
}

function appendLine(text: string, line: string): string {
  if (text === '') return `${line}\n`;
  return `${text.endsWith('\n') ? text : `${text}\n`}${line}\n`;
}

const sameUrl = (a: string, b: string): boolean => a.replace(/\/+$/, '') === b.replace(/\/+$/, '');

/**
 * Adds `values` to the list setting `name` (an `extra-…` setting): values already present in any of the
 * `equivalent` settings are skipped; the rest are appended to the last `name` line, or to a new line.
 */
function addListValues(
  text: string,
  name: string,
  values: readonly string[],
  equivalent: readonly string[],
  same: (a: string, b: string) => boolean,
): string {
  const lines = splitLines(text);
  const settings = settingLines(lines);
  const present = settings.filter((line) => equivalent.includes(line.name)).flatMap((line) => line.values);
  const missing: string[] = [];
  for (const value of values) {
    if (!present.some((other) => same(other, value)) && !missing.some((other) => same(other, value))) {
      missing.push(value);
    }
  }
  if (missing.length === 0) return text;
  const target = settings.filter((line) => line.name === name).at(-1);
  if (target === undefined) return appendLine(text, `${name} = ${missing.join(' ')}`);
  const line = lines[target.index] ?? '';
  lines[target.index] =
    `${line.slice(0, target.valueEnd)} ${missing.join(' ')}${line.slice(target.valueEnd)}`;
  return lines.join('\n');
}

export function addSubstituter(text: string, url: string): string {
  return addListValues(
    text,
    'extra-substituters',
    [url],
    SUBSTITUTER_SETTINGS.filter((name) => !name.includes('trusted')),
    sameUrl,
  );
}

export function addTrustedPublicKeys(text: string, keys: readonly string[]): string {
  return addListValues(text, 'extra-trusted-public-keys', keys, PUBLIC_KEY_SETTINGS, (a, b) => a === b);
}

/** Adds `name = value` unless some line already sets `name`. */
export function setIfAbsent(text: string, name: string, value: string): string {
  return getSetting(text, name) === undefined ? appendLine(text, `${name} = ${value}`) : text;
}

// ---------------------------------------------------------------------------------------------------------
// netrc

interface NetrcToken {
  readonly text: string;
  readonly start: number;
  readonly end: number;
}

interface NetrcEntry {
  /** undefined for `default`. */
  readonly host: string | undefined;
  readonly tokens: readonly NetrcToken[];
}

function netrcTokens(text: string): NetrcToken[] {
  const tokens: NetrcToken[] = [];
  const pattern = /[^\s]+/g;
  let inMacro = false;
  let lineStart = true;
  let position = 0;
  while (position < text.length) {
    if (inMacro) {
      // A macdef body ends at the first empty line.
      const blank = text.indexOf('\n\n', position);
      if (blank < 0) break;
      position = blank + 2;
      inMacro = false;
      lineStart = true;
      continue;
    }
    const char = text[position] ?? '';
    if (char === '\n') {
      lineStart = true;
      position++;
      continue;
    }
    if (/\s/.test(char)) {
      position++;
      continue;
    }
    if (lineStart && char === '#') {
      const end = text.indexOf('\n', position);
      position = end < 0 ? text.length : end;
      continue;
    }
    lineStart = false;
    pattern.lastIndex = position;
    const match = pattern.exec(text);
    if (match === null) break;
    tokens.push({ text: match[0], start: match.index, end: match.index + match[0].length });
    position = match.index + match[0].length;
    if (match[0] === 'macdef') {
      // The macro's name, then its body from the next line on.
      const nameMatch = pattern.exec(text);
      if (nameMatch !== null)
        tokens.push({ text: nameMatch[0], start: nameMatch.index, end: pattern.lastIndex });
      const eol = text.indexOf('\n', pattern.lastIndex);
      if (eol < 0) break;
      position = eol + 1;
      inMacro = true;
    }
  }
  return tokens;
}

function netrcEntries(tokens: readonly NetrcToken[]): NetrcEntry[] {
  const entries: NetrcEntry[] = [];
  let current: { host: string | undefined; tokens: NetrcToken[] } | undefined;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (token === undefined) continue;
    if (token.text === 'machine' || token.text === 'default') {
      if (current !== undefined) entries.push(current);
      const host = token.text === 'machine' ? tokens[i + 1]?.text : undefined;
      current = { host, tokens: [token] };
    } else if (current !== undefined) {
      current.tokens.push(token);
    }
  }
  if (current !== undefined) entries.push(current);
  return entries;
}

export interface NetrcEdit {
  readonly text: string;
  /** What happened to the entry for the host. */
  readonly action: 'added' | 'replaced' | 'unchanged';
}

/** Sets the credentials for `host` (`machine <host> login <login> password <password>`). */
export function setNetrcEntry(text: string, host: string, login: string, password: string): NetrcEdit {
  for (const value of [host, login, password]) {
    if (value === '' || /[\s"\\]/.test(value)) {
      throw new Error(`cannot write ${JSON.stringify(value)} into a netrc file (empty, blank or quote)`);
    }
  }
  const line = `machine ${host} login ${login} password ${password}`;
  const entries = netrcEntries(netrcTokens(text));
  const existing = entries.find((entry) => entry.host === host);
  if (existing !== undefined) {
    const words = existing.tokens.map((token) => token.text);
    if (words.join(' ') === line) return { text, action: 'unchanged' };
    const first = existing.tokens[0];
    const last = existing.tokens.at(-1);
    if (first === undefined || last === undefined) return { text, action: 'unchanged' };
    return { text: `${text.slice(0, first.start)}${line}${text.slice(last.end)}`, action: 'replaced' };
  }
  // curl stops at `default`, so a new machine entry must come before it.
  const fallback = entries.find((entry) => entry.host === undefined)?.tokens[0];
  if (fallback !== undefined) {
    return {
      text: `${text.slice(0, fallback.start)}${line}\n${text.slice(fallback.start)}`,
      action: 'added',
    };
  }
  return { text: appendLine(text, line), action: 'added' };
}
