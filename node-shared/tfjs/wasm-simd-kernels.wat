;; SIMD loops for the wasm training kernels (./wasm-kernels.ts) that no tfjs-backend-wasm kernel does fast.
;; They run on the tfjs-backend-wasm heap (the memory is imported), on tensors' own buffers: every pointer
;; is a byte address in that heap, every tensor float32.
;;
;; After editing, regenerate ./wasm-simd-binary.ts:
;;   npm install --no-save wabt@1.0.39 && npx tsx node-shared/tfjs/build-wasm-simd.ts
(module
  (import "env" "memory" (memory 1))

  ;; Filter gradient of one row of pixels:
  ;;   acc[ci, co] += sum over j < count of x[j * xStride + ci] * dy[j, co]
  ;; for ci < channelsIn, co < channelsOut (a multiple of 8); x pixels are xStride bytes apart (the
  ;; convolution's stride), dy pixels are contiguous. acc is [channelsIn, channelsOut].
  ;; Blocks of 4 input x 8 output channels keep 8 accumulators in registers over the row.
  (func (export "filterGradientRow")
    (param $x i32) (param $xStride i32) (param $dy i32) (param $count i32)
    (param $channelsIn i32) (param $channelsOut i32) (param $acc i32)
    (local $dyStride i32) (local $co i32) (local $ci i32) (local $j i32)
    (local $px i32) (local $pdy i32) (local $pacc i32) (local $rowBytes i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local $d0 v128) (local $d1 v128) (local $s v128)
    (if (i32.le_s (local.get $count) (i32.const 0)) (then (return)))
    (local.set $dyStride (i32.shl (local.get $channelsOut) (i32.const 2)))
    (local.set $rowBytes (local.get $dyStride))
    (local.set $co (i32.const 0))
    (loop $outBlocks
      (local.set $ci (i32.const 0))
      ;; 4 input channels at a time
      (block $fourDone
        (loop $fourBlocks
          (br_if $fourDone (i32.gt_s (i32.add (local.get $ci) (i32.const 4)) (local.get $channelsIn)))
          (local.set $pacc (i32.add (local.get $acc)
            (i32.add (i32.mul (local.get $ci) (local.get $rowBytes)) (i32.shl (local.get $co) (i32.const 2)))))
          (local.set $a0 (v128.load offset=0 (local.get $pacc)))
          (local.set $a1 (v128.load offset=16 (local.get $pacc)))
          (local.set $a2 (v128.load offset=0 (i32.add (local.get $pacc) (local.get $rowBytes))))
          (local.set $a3 (v128.load offset=16 (i32.add (local.get $pacc) (local.get $rowBytes))))
          (local.set $a4 (v128.load offset=0 (i32.add (local.get $pacc) (i32.shl (local.get $rowBytes) (i32.const 1)))))
          (local.set $a5 (v128.load offset=16 (i32.add (local.get $pacc) (i32.shl (local.get $rowBytes) (i32.const 1)))))
          (local.set $a6 (v128.load offset=0 (i32.add (local.get $pacc) (i32.mul (local.get $rowBytes) (i32.const 3)))))
          (local.set $a7 (v128.load offset=16 (i32.add (local.get $pacc) (i32.mul (local.get $rowBytes) (i32.const 3)))))
          (local.set $px (i32.add (local.get $x) (i32.shl (local.get $ci) (i32.const 2))))
          (local.set $pdy (i32.add (local.get $dy) (i32.shl (local.get $co) (i32.const 2))))
          (local.set $j (local.get $count))
          (loop $pixels
            (local.set $d0 (v128.load offset=0 (local.get $pdy)))
            (local.set $d1 (v128.load offset=16 (local.get $pdy)))
            (local.set $s (v128.load32_splat offset=0 (local.get $px)))
            (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (local.get $d0))))
            (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (local.get $d1))))
            (local.set $s (v128.load32_splat offset=4 (local.get $px)))
            (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (local.get $d0))))
            (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (local.get $d1))))
            (local.set $s (v128.load32_splat offset=8 (local.get $px)))
            (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $s) (local.get $d0))))
            (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $s) (local.get $d1))))
            (local.set $s (v128.load32_splat offset=12 (local.get $px)))
            (local.set $a6 (f32x4.add (local.get $a6) (f32x4.mul (local.get $s) (local.get $d0))))
            (local.set $a7 (f32x4.add (local.get $a7) (f32x4.mul (local.get $s) (local.get $d1))))
            (local.set $px (i32.add (local.get $px) (local.get $xStride)))
            (local.set $pdy (i32.add (local.get $pdy) (local.get $dyStride)))
            (local.tee $j (i32.sub (local.get $j) (i32.const 1)))
            (br_if $pixels))
          (v128.store offset=0 (local.get $pacc) (local.get $a0))
          (v128.store offset=16 (local.get $pacc) (local.get $a1))
          (v128.store offset=0 (i32.add (local.get $pacc) (local.get $rowBytes)) (local.get $a2))
          (v128.store offset=16 (i32.add (local.get $pacc) (local.get $rowBytes)) (local.get $a3))
          (v128.store offset=0 (i32.add (local.get $pacc) (i32.shl (local.get $rowBytes) (i32.const 1))) (local.get $a4))
          (v128.store offset=16 (i32.add (local.get $pacc) (i32.shl (local.get $rowBytes) (i32.const 1))) (local.get $a5))
          (v128.store offset=0 (i32.add (local.get $pacc) (i32.mul (local.get $rowBytes) (i32.const 3))) (local.get $a6))
          (v128.store offset=16 (i32.add (local.get $pacc) (i32.mul (local.get $rowBytes) (i32.const 3))) (local.get $a7))
          (local.set $ci (i32.add (local.get $ci) (i32.const 4)))
          (br $fourBlocks)))
      ;; the remaining input channels one at a time
      (block $oneDone
        (loop $oneBlocks
          (br_if $oneDone (i32.ge_s (local.get $ci) (local.get $channelsIn)))
          (local.set $pacc (i32.add (local.get $acc)
            (i32.add (i32.mul (local.get $ci) (local.get $rowBytes)) (i32.shl (local.get $co) (i32.const 2)))))
          (local.set $a0 (v128.load offset=0 (local.get $pacc)))
          (local.set $a1 (v128.load offset=16 (local.get $pacc)))
          (local.set $px (i32.add (local.get $x) (i32.shl (local.get $ci) (i32.const 2))))
          (local.set $pdy (i32.add (local.get $dy) (i32.shl (local.get $co) (i32.const 2))))
          (local.set $j (local.get $count))
          (loop $pixels1
            (local.set $s (v128.load32_splat (local.get $px)))
            (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (v128.load offset=0 (local.get $pdy)))))
            (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $pdy)))))
            (local.set $px (i32.add (local.get $px) (local.get $xStride)))
            (local.set $pdy (i32.add (local.get $pdy) (local.get $dyStride)))
            (local.tee $j (i32.sub (local.get $j) (i32.const 1)))
            (br_if $pixels1))
          (v128.store offset=0 (local.get $pacc) (local.get $a0))
          (v128.store offset=16 (local.get $pacc) (local.get $a1))
          (local.set $ci (i32.add (local.get $ci) (i32.const 1)))
          (br $oneBlocks)))
      (local.set $co (i32.add (local.get $co) (i32.const 8)))
      (br_if $outBlocks (i32.lt_s (local.get $co) (local.get $channelsOut)))))
;;
  ;; Column sums of a [rows, channels] matrix (rowBytes = channels * 4, a multiple of 16):
  ;;   out[c] += sum over r < rows of x[r, c]
  (func (export "addColumnSums")
    (param $x i32) (param $rows i32) (param $rowBytes i32) (param $out i32)
    (local $at i32) (local $end i32)
    (if (i32.le_s (local.get $rows) (i32.const 0)) (then (return)))
    (local.set $end (i32.add (local.get $x) (i32.mul (local.get $rows) (local.get $rowBytes))))
    (loop $rowsLoop
      (local.set $at (i32.const 0))
      (loop $vectors
        (v128.store (i32.add (local.get $out) (local.get $at))
          (f32x4.add
            (v128.load (i32.add (local.get $out) (local.get $at)))
            (v128.load (i32.add (local.get $x) (local.get $at)))))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br_if $vectors (i32.lt_u (local.get $at) (local.get $rowBytes))))
      (local.set $x (i32.add (local.get $x) (local.get $rowBytes)))
      (br_if $rowsLoop (i32.lt_u (local.get $x) (local.get $end)))))

  ;; A per-channel affine map of a [rows, channels] matrix (rowBytes = channels * 4, a multiple of 16):
  ;;   out[r, c] = (x[r, c] - shift[c]) * scale[c] + offset[c]
  ;; shift 0, scale 1 or offset 0 leave x's bits as a plain add, subtract or multiply would.
  (func (export "channelAffine")
    (param $x i32) (param $rows i32) (param $rowBytes i32)
    (param $shift i32) (param $scale i32) (param $offset i32) (param $out i32)
    (local $at i32) (local $end i32)
    (if (i32.le_s (local.get $rows) (i32.const 0)) (then (return)))
    (local.set $end (i32.add (local.get $x) (i32.mul (local.get $rows) (local.get $rowBytes))))
    (loop $rowsLoop
      (local.set $at (i32.const 0))
      (loop $vectors
        (v128.store (i32.add (local.get $out) (local.get $at))
          (f32x4.add
            (f32x4.mul
              (f32x4.sub
                (v128.load (i32.add (local.get $x) (local.get $at)))
                (v128.load (i32.add (local.get $shift) (local.get $at))))
              (v128.load (i32.add (local.get $scale) (local.get $at))))
            (v128.load (i32.add (local.get $offset) (local.get $at)))))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br_if $vectors (i32.lt_u (local.get $at) (local.get $rowBytes))))
      (local.set $x (i32.add (local.get $x) (local.get $rowBytes)))
      (local.set $out (i32.add (local.get $out) (local.get $rowBytes)))
      (br_if $rowsLoop (i32.lt_u (local.get $x) (local.get $end)))))
;;
  ;; A run of pixels times one filter tap, added in:
  ;;   out[j * outStride + n] += sum over kk < k of in[j * inStride + kk] * w[kk, n]
  ;; for j < count and n < channelsOut (a multiple of 8); strides in bytes, w is [k, channelsOut].
  ;; The input gradient of a convolution is this with in = dy pixels, out = dx pixels (the stride apart)
  ;; and w = the tap's [Co, Ci] transposed filter. Tiles of 4 pixels x 8 outputs stay in registers over k.
  (func (export "addRowProduct")
    (param $in i32) (param $inStride i32) (param $out i32) (param $outStride i32) (param $count i32)
    (param $k i32) (param $channelsOut i32) (param $w i32)
    (local $nb i32) (local $j i32) (local $kk i32) (local $pin i32) (local $pw i32) (local $pout i32)
    (local $wRow i32) (local $in2 i32) (local $in3 i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local $w0 v128) (local $w1 v128) (local $s v128)
    (if (i32.or (i32.le_s (local.get $count) (i32.const 0)) (i32.le_s (local.get $k) (i32.const 0))) (then (return)))
    (local.set $wRow (i32.shl (local.get $channelsOut) (i32.const 2)))
    (local.set $in2 (i32.shl (local.get $inStride) (i32.const 1)))
    (local.set $in3 (i32.mul (local.get $inStride) (i32.const 3)))
    (local.set $nb (i32.const 0))
    (loop $outBlocks
      (local.set $j (i32.const 0))
      ;; 4 pixels at a time
      (block $fourDone
        (loop $fourPixels
          (br_if $fourDone (i32.gt_s (i32.add (local.get $j) (i32.const 4)) (local.get $count)))
          (local.set $a0 (v128.const i32x4 0 0 0 0))
          (local.set $a1 (v128.const i32x4 0 0 0 0))
          (local.set $a2 (v128.const i32x4 0 0 0 0))
          (local.set $a3 (v128.const i32x4 0 0 0 0))
          (local.set $a4 (v128.const i32x4 0 0 0 0))
          (local.set $a5 (v128.const i32x4 0 0 0 0))
          (local.set $a6 (v128.const i32x4 0 0 0 0))
          (local.set $a7 (v128.const i32x4 0 0 0 0))
          (local.set $pin (i32.add (local.get $in) (i32.mul (local.get $j) (local.get $inStride))))
          (local.set $pw (i32.add (local.get $w) (i32.shl (local.get $nb) (i32.const 2))))
          (local.set $kk (local.get $k))
          (loop $products
            (local.set $w0 (v128.load offset=0 (local.get $pw)))
            (local.set $w1 (v128.load offset=16 (local.get $pw)))
            (local.set $s (v128.load32_splat (local.get $pin)))
            (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (local.get $w0))))
            (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (local.get $w1))))
            (local.set $s (v128.load32_splat (i32.add (local.get $pin) (local.get $inStride))))
            (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (local.get $w0))))
            (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (local.get $w1))))
            (local.set $s (v128.load32_splat (i32.add (local.get $pin) (local.get $in2))))
            (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $s) (local.get $w0))))
            (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $s) (local.get $w1))))
            (local.set $s (v128.load32_splat (i32.add (local.get $pin) (local.get $in3))))
            (local.set $a6 (f32x4.add (local.get $a6) (f32x4.mul (local.get $s) (local.get $w0))))
            (local.set $a7 (f32x4.add (local.get $a7) (f32x4.mul (local.get $s) (local.get $w1))))
            (local.set $pin (i32.add (local.get $pin) (i32.const 4)))
            (local.set $pw (i32.add (local.get $pw) (local.get $wRow)))
            (local.tee $kk (i32.sub (local.get $kk) (i32.const 1)))
            (br_if $products))
          (local.set $pout (i32.add (local.get $out)
            (i32.add (i32.mul (local.get $j) (local.get $outStride)) (i32.shl (local.get $nb) (i32.const 2)))))
      (v128.store offset=0 (local.get $pout) (f32x4.add (v128.load offset=0 (local.get $pout)) (local.get $a0)))
      (v128.store offset=16 (local.get $pout) (f32x4.add (v128.load offset=16 (local.get $pout)) (local.get $a1)))
          (local.set $pout (i32.add (local.get $pout) (local.get $outStride)))
      (v128.store offset=0 (local.get $pout) (f32x4.add (v128.load offset=0 (local.get $pout)) (local.get $a2)))
      (v128.store offset=16 (local.get $pout) (f32x4.add (v128.load offset=16 (local.get $pout)) (local.get $a3)))
          (local.set $pout (i32.add (local.get $pout) (local.get $outStride)))
      (v128.store offset=0 (local.get $pout) (f32x4.add (v128.load offset=0 (local.get $pout)) (local.get $a4)))
      (v128.store offset=16 (local.get $pout) (f32x4.add (v128.load offset=16 (local.get $pout)) (local.get $a5)))
          (local.set $pout (i32.add (local.get $pout) (local.get $outStride)))
      (v128.store offset=0 (local.get $pout) (f32x4.add (v128.load offset=0 (local.get $pout)) (local.get $a6)))
      (v128.store offset=16 (local.get $pout) (f32x4.add (v128.load offset=16 (local.get $pout)) (local.get $a7)))
          (local.set $j (i32.add (local.get $j) (i32.const 4)))
          (br $fourPixels)))
      ;; the remaining pixels one at a time
      (block $oneDone
        (loop $onePixel
          (br_if $oneDone (i32.ge_s (local.get $j) (local.get $count)))
          (local.set $a0 (v128.const i32x4 0 0 0 0))
          (local.set $a1 (v128.const i32x4 0 0 0 0))
          (local.set $pin (i32.add (local.get $in) (i32.mul (local.get $j) (local.get $inStride))))
          (local.set $pw (i32.add (local.get $w) (i32.shl (local.get $nb) (i32.const 2))))
          (local.set $kk (local.get $k))
          (loop $products1
            (local.set $s (v128.load32_splat (local.get $pin)))
            (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (v128.load offset=0 (local.get $pw)))))
            (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $pw)))))
            (local.set $pin (i32.add (local.get $pin) (i32.const 4)))
            (local.set $pw (i32.add (local.get $pw) (local.get $wRow)))
            (local.tee $kk (i32.sub (local.get $kk) (i32.const 1)))
            (br_if $products1))
          (local.set $pout (i32.add (local.get $out)
            (i32.add (i32.mul (local.get $j) (local.get $outStride)) (i32.shl (local.get $nb) (i32.const 2)))))
      (v128.store offset=0 (local.get $pout) (f32x4.add (v128.load offset=0 (local.get $pout)) (local.get $a0)))
      (v128.store offset=16 (local.get $pout) (f32x4.add (v128.load offset=16 (local.get $pout)) (local.get $a1)))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $onePixel)))
      (local.set $nb (i32.add (local.get $nb) (i32.const 8)))
      (br_if $outBlocks (i32.lt_s (local.get $nb) (local.get $channelsOut)))))
)
