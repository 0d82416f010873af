/**
 * Area under the ROC curve by ranks: (sum of positives' ranks − P(P+1)/2) / (P·N),
 * tied scores sharing their average rank. NaN when either class is missing.
 */
export function rocAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => scores[a]! - scores[b]!);
  let positives = 0;
  let rankSum = 0;
  for (let start = 0; start < n; ) {
    let end = start;
    const s = scores[order[start]!]!;
    while (end + 1 < n && scores[order[end + 1]!] === s) end++;
    // Ranks are 1-based; a run of ties from start to end shares their mean.
    const rank = (start + end) / 2 + 1;
    for (let k = start; k <= end; k++) {
      if (labels[order[k]!] === 1) {
        positives++;
        rankSum += rank;
      }
    }
    start = end + 1;
  }
  const negatives = n - positives;
  if (positives === 0 || negatives === 0) return NaN;
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}
