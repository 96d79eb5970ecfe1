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
