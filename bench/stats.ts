/**
 * Percentiles and summaries of repeated measurements. Pure functions.
 *
 * @module
 */

/** A value measured over several rounds: the median round, and the spread. */
export interface Summary {
  /** Median of the rounds. */
  median: number;
  /** Smallest round. */
  min: number;
  /** Largest round. */
  max: number;
  /** 25th percentile of the rounds. */
  p25: number;
  /** 75th percentile of the rounds. */
  p75: number;
  /** Number of rounds. */
  n: number;
}

/**
 * The `p`-th percentile (0..100) of `values`, by linear interpolation
 * between closest ranks. NaN for an empty list.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = values.toSorted((a, b) => a - b);
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (rank - low);
}

/** The median of `values` (NaN when empty). */
export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** The median of `values`, or null when there are none (a figure a run did not measure). */
export function medianOrNull(values: readonly number[] | undefined): number | null {
  return values && values.length > 0 ? median(values) : null;
}

/** Summarises the per-round values of one figure; null when there are none. */
export function summarize(values: readonly number[]): Summary | null {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return null;
  return {
    median: median(finite),
    min: Math.min(...finite),
    max: Math.max(...finite),
    p25: percentile(finite, 25),
    p75: percentile(finite, 75),
    n: finite.length,
  };
}

/** `a / b`, or null when either is missing or `b` is zero. */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}
