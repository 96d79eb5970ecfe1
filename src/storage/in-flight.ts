// The operations a blob store has under way, so that `close()` can let them finish before releasing what
// they use (the temp directory, the S3 client).
export class InFlight {
  readonly #operations = new Set<Promise<unknown>>();

  /** Resolves or rejects as `operation` does, counting it as under way until then. */
  async track<T>(operation: Promise<T>): Promise<T> {
    this.#operations.add(operation);
    try {
      return await operation;
    } finally {
      this.#operations.delete(operation);
    }
  }

  /** Resolves once every operation under way now has settled. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#operations]);
  }
}
