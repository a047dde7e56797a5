// Data movement: permute (transpose), strided region copies, gather and scatter-add of rows.

/**
 * out (contiguous, shape dims[0..rank)) = x read with element strides strides[0..rank), both
 * i32 arrays in memory; the last dimension is the innermost loop.
 */
export function permute(x: usize, o: usize, rank: i32, dims: usize, strides: usize, idx: usize): void {
  if (rank == 0) {
    store<f32>(o, load<f32>(x));
    return;
  }
  const last = rank - 1;
  const inner = load<i32>(dims + (<usize>last << 2));
  const innerStride = <usize>load<i32>(strides + (<usize>last << 2)) << 2;
  let outer = 1;
  for (let d = 0; d < last; d++) {
    outer *= load<i32>(dims + (<usize>d << 2));
    store<i32>(idx + (<usize>d << 2), 0);
  }
  if (inner == 0) return;
  const rowBytes = <usize>inner << 2;
  let src = x;
  for (let r = 0; r < outer; r++) {
    if (innerStride == 4) {
      memory.copy(o, src, rowBytes);
    } else {
      let s = src;
      for (let j = 0; j < inner; j++) {
        store<f32>(o + (<usize>j << 2), load<f32>(s));
        s += innerStride;
      }
    }
    o += rowBytes;
    // Advance the outer index (odometer) and the source offset.
    for (let d = last - 1; d >= 0; d--) {
      const ip = idx + (<usize>d << 2);
      const st = <usize>load<i32>(strides + (<usize>d << 2)) << 2;
      const i = load<i32>(ip) + 1;
      if (i < load<i32>(dims + (<usize>d << 2))) {
        store<i32>(ip, i);
        src += st;
        break;
      }
      store<i32>(ip, 0);
      src -= st * <usize>(i - 1);
    }
  }
}

/**
 * dst (+)= src over a region of rank dims dims[0..rank): the last dimension is contiguous in
 * both, the outer ones step by element strides sStrides / dStrides (i32 arrays in memory, like
 * dims); idx is rank i32 of scratch.
 */
export function copyRegion(src: usize, dst: usize, rank: i32, dims: usize, sStrides: usize, dStrides: usize, idx: usize, accumulate: bool): void {
  const last = rank - 1;
  const inner = load<i32>(dims + (<usize>last << 2));
  let outer = 1;
  for (let d = 0; d < last; d++) {
    outer *= load<i32>(dims + (<usize>d << 2));
    store<i32>(idx + (<usize>d << 2), 0);
  }
  const rowBytes = <usize>inner << 2;
  let s = src, o = dst;
  for (let r = 0; r < outer; r++) {
    if (accumulate) addRow(o, s, inner);
    else memory.copy(o, s, rowBytes);
    for (let d = last - 1; d >= 0; d--) {
      const ip = idx + (<usize>d << 2);
      const ss = <usize>load<i32>(sStrides + (<usize>d << 2)) << 2;
      const ds = <usize>load<i32>(dStrides + (<usize>d << 2)) << 2;
      const i = load<i32>(ip) + 1;
      if (i < load<i32>(dims + (<usize>d << 2))) {
        store<i32>(ip, i);
        s += ss;
        o += ds;
        break;
      }
      store<i32>(ip, 0);
      s -= ss * <usize>(i - 1);
      o -= ds * <usize>(i - 1);
    }
  }
}

/** t[0..cols) += g[0..cols). */
function addRow(t: usize, g: usize, cols: i32): void {
  let j = 0;
  for (; j + 4 <= cols; j += 4) {
    const off = <usize>j << 2;
    v128.store(t + off, f32x4.add(v128.load(t + off), v128.load(g + off)));
  }
  for (; j < cols; j++) {
    const off = <usize>j << 2;
    store<f32>(t + off, load<f32>(t + off) + load<f32>(g + off));
  }
}

/** out[i, :] = table[ids[i], :] for i < n; ids is an i32 array in memory. */
export function gatherRows(table: usize, ids: usize, n: i32, cols: i32, o: usize): void {
  const rowBytes = <usize>cols << 2;
  for (let i = 0; i < n; i++) {
    memory.copy(o + <usize>i * rowBytes, table + <usize>load<i32>(ids + (<usize>i << 2)) * rowBytes, rowBytes);
  }
}

/** table[ids[i], :] += dy[i, :] for i < n. */
export function scatterAddRows(dy: usize, ids: usize, n: i32, cols: i32, table: usize): void {
  const rowBytes = <usize>cols << 2;
  for (let i = 0; i < n; i++) addRow(table + <usize>load<i32>(ids + (<usize>i << 2)) * rowBytes, dy + <usize>i * rowBytes, cols);
}
