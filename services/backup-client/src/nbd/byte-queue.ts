/** Bytes received from a socket, consumed front to back without re-copying the whole backlog. */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // bytes already consumed from chunks[0]
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Removes and returns exactly `n` bytes; the caller checks `length` first. */
  take(n: number): Buffer {
    if (n > this.length) throw new RangeError(`take(${n}) with ${this.length} buffered`);
    this.length -= n;
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0] as Buffer;
      const count = Math.min(chunk.length - this.head, n - filled);
      chunk.copy(out, filled, this.head, this.head + count);
      filled += count;
      this.head += count;
      if (this.head === chunk.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    return out;
  }

  /** Removes `n` bytes, copying them straight into `target` at `at` (one copy, no temporary). */
  takeInto(target: Buffer, at: number, n: number): void {
    if (n > this.length) throw new RangeError(`takeInto(${n}) with ${this.length} buffered`);
    this.length -= n;
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0] as Buffer;
      const count = Math.min(chunk.length - this.head, n - filled);
      chunk.copy(target, at + filled, this.head, this.head + count);
      filled += count;
      this.head += count;
      if (this.head === chunk.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
  }

  /** Copies the first `n` bytes without consuming them. */
  peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= n) {
      return first.subarray(this.head, this.head + n);
    }
    const saved = { chunks: [...this.chunks], head: this.head, length: this.length };
    const out = Buffer.from(this.take(n));
    this.chunks = saved.chunks;
    this.head = saved.head;
    this.length = saved.length;
    return out;
  }
}
