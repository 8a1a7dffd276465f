/** Median and 90th percentile (nearest rank) of a sample, for the bench's "median / p90" figures. */
export interface Spread {
  median: number;
  p90: number;
  n: number;
}

export function spread(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
  return { median: rank(0.5), p90: rank(0.9), n: sorted.length };
}
