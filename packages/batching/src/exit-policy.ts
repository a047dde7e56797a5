// The exit policy interface: after each loop but the last, a policy decides whether a token
// stops there. The built-in policies are in policies.ts, the learned router's in router.ts.

import type { Tensor } from '@rrt/tensor';

export interface ExitPolicy {
  readonly name: string;
  /**
   * logits: one token's logits [V] at the exit after loop `loop` (0-based) of `loops`; true to
   * stop there. Never asked at the last loop (every token exits there).
   */
  shouldExit(logits: Float32Array, loop: number, loops: number): boolean;
  /**
   * Policies that decide from the hidden state instead of the logits (a learned router) set
   * this: normed is [n, D], n tokens' hidden states at the end of loop `loop` after the model's
   * final norm, on the model's backend; it returns one flag per row. The LM head then runs only
   * for the tokens that leave, so a token that continues costs no head. shouldExit is not
   * called for such a policy.
   */
  exitFromHidden?(normed: Tensor, loop: number, loops: number): ArrayLike<boolean>;
  /**
   * Analysis policies that need every loop's logits (the oracle) set this: the token then runs
   * all loops, and hindsight(perLoop) (logits after each loop, [loops][V]) returns the 0-based
   * loop it would have exited at. shouldExit is not called for such a policy.
   */
  hindsight?(perLoop: readonly Float32Array[]): number;
}
