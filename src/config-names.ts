// Names settings in configuration errors the way the user gave them. src/config.ts merges the config
// file, the environment and flags into one camelCase object before validating it, so a problem is found
// at a path such as `storage.partsInFlite`; the user wrote `parts-in-flite` in the file, or set
// NICHE_S3_BUCKET, or passed --max-nar-size. This module remembers, for every setting, where it came from
// and how it was spelt, and turns validation issues into messages that use those names.
import { z } from 'zod';

export function kebabToCamel(key: string): string {
  return key.replace(/-([a-z0-9])/g, (_match, letter: string) => letter.toUpperCase());
}

export function camelToKebab(key: string): string {
  return key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
}

const MARK = '\u0000';

/**
 * A stand-in for `process.env` or the flags whose every property is a marker naming itself, so running a
 * layer builder on it shows which variable or flag feeds which setting.
 */
export function markers(): Record<string, string> {
  return new Proxy({}, { get: (_target, name) => (typeof name === 'string' ? `${MARK}${name}` : undefined) });
}

/** `[0]` for array indices, `.kebab-name` for keys. */
function suffix(parts: readonly string[]): string {
  return parts.map((part) => (/^\d+$/.test(part) ? `[${part}]` : `.${camelToKebab(part)}`)).join('');
}

/** The object schema at `path` inside `schema` (through optionals and pipes), if there is one. */
function objectAt(schema: z.ZodType, path: readonly string[]): z.ZodObject | undefined {
  let current: z.ZodType | undefined = schema;
  for (let i = 0; ; i++) {
    while (current instanceof z.ZodOptional || current instanceof z.ZodPipe) {
      current =
        current instanceof z.ZodOptional ? (current.unwrap() as z.ZodType) : (current.in as z.ZodType);
    }
    if (!(current instanceof z.ZodObject)) return undefined;
    const part = path[i];
    if (part === undefined) return current;
    current = current.shape[part] as z.ZodType | undefined;
  }
}

/** Levenshtein distance, for "did you mean" (keys are short). */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        (previous[j] ?? 0) + 1,
        (current[j - 1] ?? 0) + 1,
        (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

export class SettingNames {
  /** Display name by camelCase path (`storage.partsInFlight`), for settings given by the user. */
  readonly #names = new Map<string, string>();

  /** Returns the config file's value with camelCase keys, remembering the keys as written. */
  camelFileKeys(value: unknown, path: readonly string[] = [], written: readonly string[] = []): unknown {
    if (Array.isArray(value)) return value.map((inner) => this.camelFileKeys(inner));
    if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
      return Object.fromEntries(
        Object.entries(value).map(([key, inner]) => {
          const camel = kebabToCamel(key);
          const at = [...path, camel];
          const as = [...written, key];
          this.#names.set(at.join('.'), as.join('.'));
          return [camel, this.camelFileKeys(inner, at, as)];
        }),
      );
    }
    return value;
  }

  /**
   * Remembers which source feeds each setting of `layer` (built from `markers()`), for the sources the
   * user actually gave (`given`), named by `display` (`NICHE_S3_BUCKET`, `--max-nar-size`).
   */
  recordSources(
    layer: Record<string, unknown>,
    given: (source: string) => boolean,
    display: (source: string) => string,
    path: readonly string[] = [],
  ): void {
    for (const [key, value] of Object.entries(layer)) {
      const at = [...path, key];
      const marker: unknown = Array.isArray(value) ? value[0] : value;
      if (typeof marker === 'string' && marker.startsWith(MARK)) {
        const source = marker.slice(MARK.length);
        if (given(source)) this.#names.set(at.join('.'), display(source));
      } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        this.recordSources(value as Record<string, unknown>, given, display, at);
      }
    }
  }

  /** How the user would name the setting at `path`: as given, else its config-file key. */
  nameOf(path: readonly PropertyKey[]): string {
    const parts = path.map(String);
    for (let i = parts.length; i > 0; i--) {
      const known = this.#names.get(parts.slice(0, i).join('.'));
      if (known !== undefined) return known + suffix(parts.slice(i));
    }
    return suffix(parts).replace(/^\./, '') || '(config)';
  }

  /** One message per problem of a validation issue, naming settings as the user gave them. */
  describe(issue: z.core.$ZodIssue, schema: z.ZodType): string[] {
    if (issue.code !== 'unrecognized_keys') return [`${this.nameOf(issue.path)}: ${issue.message}`];
    const path = issue.path.map(String);
    const known = Object.keys(objectAt(schema, path)?.shape ?? {});
    return issue.keys.map((key) => {
      const close = known
        .map((candidate) => ({ candidate, d: distance(kebabToCamel(key), candidate) }))
        .filter(({ candidate, d }) => d <= Math.max(2, Math.floor(candidate.length / 4)))
        .sort((a, b) => a.d - b.d)[0];
      const hint = close === undefined ? '' : ` (did you mean ${camelToKebab(close.candidate)}?)`;
      return `${this.nameOf([...path, key])}: unknown setting${hint}`;
    });
  }
}
