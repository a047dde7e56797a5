// Helpers for this package's tests (not part of the public API). The test models, fixtures and
// comparisons are @rrt/recursive's, imported by relative path: test-only code, never built into
// or published with either package.
export {
  FAMILIES, fixtureDir, loadFixture, logitsOf, maxAbsDiff, randomModel, someIds, testBackend,
} from '../../recursive/src/testing.test-util.js';

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}
