// Realisations of content-addressed derivations (experimental `ca-derivations`), as Nix 2.8 - 2.34 and Lix
// read and write them in binary caches: `realisations/<id>.doi`, where the id is
// `sha256:<hex hash modulo of the .drv>!<output name>` (PROTOCOL.md §7.2, v1). The JSON is what Nix's
// nlohmann writer prints (keys sorted, compact); the signed fingerprint is the same object without
// `signatures`.

import { NixFormatError } from '../errors.js';
import { parseSignature } from './signature.js';
import { StorePath } from './store-path.js';

/** `sha256:<64 hex>!<output name>`; output names use the characters of store path names. */
const REALISATION_ID = /^sha256:[0-9a-f]{64}![A-Za-z0-9+\-._?=]{1,200}$/;
/** Dependent realisations a realisation may list (Nix writes few, usually none). */
export const MAX_DEPENDENT_REALISATIONS = 10_000;

export interface Realisation {
  readonly id: string;
  /** The output's base name, `<hash>-<name>`. */
  readonly outPath: string;
  /** Other realisations' ids and their out paths (base names), sorted by id. */
  readonly dependentRealisations: ReadonlyMap<string, string>;
  readonly signatures: readonly string[];
}

function invalid(message: string): NixFormatError {
  return new NixFormatError('REALISATION_INVALID', `realisation: ${message}`);
}

export function isRealisationId(text: string): boolean {
  return REALISATION_ID.test(text);
}

function baseName(text: unknown, what: string): string {
  if (typeof text !== 'string') throw invalid(`${what} must be a string`);
  try {
    return StorePath.parseBaseName(text).baseName;
  } catch {
    throw invalid(`${what} ${JSON.stringify(text.slice(0, 100))} is not a store path base name`);
  }
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Parses a realisation as Nix uploads it; throws REALISATION_INVALID. */
export function parseRealisation(text: string): Realisation {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('not an object');
  const object = value as Record<string, unknown>;
  const id = object.id;
  if (typeof id !== 'string' || !isRealisationId(id)) throw invalid('"id" must be sha256:<hex>!<output>');
  const outPath = baseName(object.outPath, '"outPath"');
  const signatures = object.signatures ?? [];
  if (!Array.isArray(signatures) || !signatures.every((item) => typeof item === 'string')) {
    throw invalid('"signatures" must be a list of strings');
  }
  for (const signature of signatures) parseSignature(signature);
  const dependents: unknown = object.dependentRealisations ?? {};
  if (typeof dependents !== 'object' || dependents === null || Array.isArray(dependents)) {
    throw invalid('"dependentRealisations" must be an object');
  }
  const entries = Object.entries(dependents as Record<string, unknown>);
  if (entries.length > MAX_DEPENDENT_REALISATIONS) {
    throw invalid(`more than ${MAX_DEPENDENT_REALISATIONS} dependent realisations`);
  }
  const dependentRealisations = new Map<string, string>();
  for (const [key, path] of entries.sort(([a], [b]) => compareBytes(a, b))) {
    if (!isRealisationId(key)) throw invalid(`dependent id ${JSON.stringify(key.slice(0, 100))} is invalid`);
    dependentRealisations.set(key, baseName(path, `the out path of ${key}`));
  }
  return { id, outPath, dependentRealisations, signatures: [...new Set(signatures)] };
}

/** `{"dependentRealisations":{…},"id":…,"outPath":…}`: what a realisation's signatures sign. */
export function realisationFingerprint(realisation: Omit<Realisation, 'signatures'>): string {
  return `{"dependentRealisations":${dependentsJson(realisation.dependentRealisations)},"id":${JSON.stringify(realisation.id)},"outPath":${JSON.stringify(realisation.outPath)}}`;
}

/** The realisation as Nix writes it (the characters of ids and base names never need escaping). */
export function formatRealisation(realisation: Realisation): string {
  return `{"dependentRealisations":${dependentsJson(realisation.dependentRealisations)},"id":${JSON.stringify(realisation.id)},"outPath":${JSON.stringify(realisation.outPath)},"signatures":${JSON.stringify(realisation.signatures)}}`;
}

function dependentsJson(dependents: ReadonlyMap<string, string>): string {
  const sorted = [...dependents].sort(([a], [b]) => compareBytes(a, b));
  return `{${sorted.map(([id, path]) => `${JSON.stringify(id)}:${JSON.stringify(path)}`).join(',')}}`;
}

// Build traces: the form Nix 2.35+ gives realisations (PROTOCOL.md §7.2, v3). The key is the derivation's
// base name and an output name, in the file's path (`build-trace-v2/<drv>/<output>.doi`); the file holds
// only the value, `{"outPath":…,"signatures":[{"keyName":…,"sig":…}]}`. Readers accept signatures as
// objects or as `name:base64` strings; the signed fingerprint is the keyed entry without signatures,
// `{"key":{"drvPath":…,"outputName":…},"value":{"outPath":…}}` (nlohmann's sorted, compact print).

const OUTPUT_NAME = /^[A-Za-z0-9+\-._?=]{1,200}$/;

export interface BuildTraceKey {
  /** The derivation's base name, `<hash>-<name>.drv`. */
  readonly drv: string;
  readonly outputName: string;
}

export interface BuildTrace {
  readonly outPath: string;
  /** `name:base64` strings, whichever form they arrived in. */
  readonly signatures: readonly string[];
}

/** The key of `build-trace-v2/<drv>/<file>`, or undefined if the two parts do not name one. */
export function buildTraceKey(drv: string, fileName: string): BuildTraceKey | undefined {
  if (!fileName.endsWith('.doi') || !drv.endsWith('.drv')) return undefined;
  const outputName = fileName.slice(0, -'.doi'.length);
  if (!OUTPUT_NAME.test(outputName)) return undefined;
  try {
    StorePath.parseBaseName(drv);
  } catch {
    return undefined;
  }
  return { drv, outputName };
}

/** The id niche keeps a build trace under: Nix's own rendering of the key, `<drv>^<output>`. */
export function buildTraceId(key: BuildTraceKey): string {
  return `${key.drv}^${key.outputName}`;
}

/** The key of an id written by buildTraceId; undefined for realisation ids of the older form. */
export function parseBuildTraceId(id: string): BuildTraceKey | undefined {
  const caret = id.lastIndexOf('^');
  if (caret === -1) return undefined;
  return buildTraceKey(id.slice(0, caret), `${id.slice(caret + 1)}.doi`);
}

function signatureOf(item: unknown): string {
  if (typeof item === 'string') {
    parseSignature(item);
    return item;
  }
  if (typeof item === 'object' && item !== null && !Array.isArray(item)) {
    const { keyName, sig } = item as Record<string, unknown>;
    if (typeof keyName === 'string' && typeof sig === 'string') {
      const text = `${keyName}:${sig}`;
      parseSignature(text);
      return text;
    }
  }
  throw invalid('each signature must be "name:base64" or {"keyName":…,"sig":…}');
}

/** Parses a build trace value as Nix 2.35+ uploads it; throws REALISATION_INVALID. */
export function parseBuildTrace(text: string): BuildTrace {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('not an object');
  const object = value as Record<string, unknown>;
  const outPath = baseName(object.outPath, '"outPath"');
  const signatures = object.signatures ?? [];
  if (!Array.isArray(signatures)) throw invalid('"signatures" must be a list');
  if (signatures.length > MAX_DEPENDENT_REALISATIONS) throw invalid('too many signatures');
  return { outPath, signatures: [...new Set(signatures.map(signatureOf))] };
}

/** What a build trace's signatures sign. */
export function buildTraceFingerprint(key: BuildTraceKey, outPath: string): string {
  return `{"key":{"drvPath":${JSON.stringify(key.drv)},"outputName":${JSON.stringify(key.outputName)}},"value":{"outPath":${JSON.stringify(outPath)}}}`;
}

/** The value as Nix 2.35+ writes it: signatures as objects, in Nix's order (key name, then bytes). */
export function formatBuildTrace(trace: BuildTrace): string {
  const signatures = trace.signatures
    .map((text) => parseSignature(text))
    .sort((a, b) => compareBytes(a.keyName, b.keyName) || Buffer.compare(a.signature, b.signature))
    .map(
      ({ keyName, signature }) =>
        `{"keyName":${JSON.stringify(keyName)},"sig":${JSON.stringify(signature.toString('base64'))}}`,
    );
  return `{"outPath":${JSON.stringify(trace.outPath)},"signatures":[${signatures.join(',')}]}`;
}
