import CKernels
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// dtype rounding edge cases and the blocked transposes against naive loops.
final class KernelTests: XCTestCase {
    func testF32ToBF16RoundsToNearestEven() {
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x3F80_8000)), 0x3F80, "tie, even below stays")
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x3F81_8000)), 0x3F82, "tie, odd rounds up")
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x3F80_8001)), 0x3F81, "above half rounds up")
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x3F80_7FFF)), 0x3F80, "below half rounds down")
        XCTAssertEqual(ns_f32_to_bf16(-1.0), 0xBF80)
        XCTAssertEqual(ns_f32_to_bf16(0.0), 0x0000)
        XCTAssertEqual(ns_f32_to_bf16(-0.0), 0x8000)
    }

    func testF32ToBF16SpecialValues() {
        XCTAssertEqual(ns_f32_to_bf16(.nan), 0x7FC0)
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0xFF80_0001)), 0x7FC0, "signalling, negative NaN -> canonical")
        XCTAssertEqual(ns_f32_to_bf16(.infinity), 0x7F80)
        XCTAssertEqual(ns_f32_to_bf16(-.infinity), 0xFF80)
        XCTAssertEqual(ns_f32_to_bf16(.greatestFiniteMagnitude), 0x7F80, "rounds up to inf as torch does")
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x7F7F_0000)), 0x7F7F)
    }

    func testF32ToBF16Subnormals() {
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x0000_8000)), 0x0000, "tie to even zero")
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x0001_8000)), 0x0002, "tie to even")
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x0000_8001)), 0x0001)
        XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: 0x007F_FFFF)), 0x0080, "largest subnormal rounds to smallest normal")
    }

    func testF32ToBF16MatchesReferenceOnRandomBits() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<200_000 {
            let bits = UInt32(truncatingIfNeeded: rng.next())
            XCTAssertEqual(ns_f32_to_bf16(Float(bitPattern: bits)), referenceBF16(bits), "bits \(String(bits, radix: 16))")
        }
    }

    func testF16ToF32AndBF16() {
        XCTAssertEqual(ns_f16_to_f32(0x3C00), 1.0)
        XCTAssertEqual(ns_f16_to_f32(0xC000), -2.0)
        XCTAssertEqual(ns_f16_to_f32(0x7BFF), 65504.0)
        XCTAssertEqual(ns_f16_to_f32(0x0001), Float(sign: .plus, exponent: -24, significand: 1), "smallest subnormal")
        XCTAssertEqual(ns_f16_to_f32(0x03FF), Float(0x3FF) * Float(sign: .plus, exponent: -24, significand: 1), "largest subnormal")
        XCTAssertEqual(ns_f16_to_f32(0x7C00), .infinity)
        XCTAssertTrue(ns_f16_to_f32(0x7E00).isNaN)
        XCTAssertEqual(ns_f16_to_f32(0x8000).sign, .minus)
        // f16 -> bf16 goes through the exact f32 value.
        XCTAssertEqual(ns_f32_to_bf16(ns_f16_to_f32(0x0001)), 0x3380)
        XCTAssertEqual(ns_f32_to_bf16(ns_f16_to_f32(0x3C01)), 0x3F80, "1 + 2^-10 rounds to 1 in bf16")
        XCTAssertEqual(ns_f32_to_bf16(ns_f16_to_f32(0x7E00)), 0x7FC0)
    }

    func testF32ToF16() {
        XCTAssertEqual(ns_f32_to_f16(1.0), 0x3C00)
        XCTAssertEqual(ns_f32_to_f16(65504.0), 0x7BFF)
        XCTAssertEqual(ns_f32_to_f16(65520.0), 0x7C00, "ties to even overflows to inf")
        XCTAssertEqual(ns_f32_to_f16(Float(sign: .plus, exponent: -25, significand: 1)), 0x0000, "half the smallest subnormal ties to 0")
        XCTAssertEqual(ns_f32_to_f16(Float(sign: .plus, exponent: -24, significand: 1.5)), 0x0002, "1.5 ulp ties to even 2")
        XCTAssertEqual(ns_f32_to_f16(.nan) & 0x7E00, 0x7E00)
        // every f16 value survives f16 -> f32 -> f16
        for h in UInt16(0)...UInt16(0x7BFF) { XCTAssertEqual(ns_f32_to_f16(ns_f16_to_f32(h)), h) }
    }

    func testBF16ToF32IsExact() {
        for b: UInt16 in [0x0000, 0x0001, 0x3F80, 0xBF80, 0x7F7F, 0x7F80] {
            XCTAssertEqual(ns_bf16_to_f32(b).bitPattern, UInt32(b) << 16)
        }
    }

    func testRawTransposeMatchesNaive() {
        var rng = SplitMix64(seed: 7)
        for size in [1, 2, 4, 8] {
            // Past the 512-row strips and the 64-byte columns, with ragged edges on both.
            for (rows, cols) in [(1, 1), (3, 5), (8, 8), (17, 70), (64, 64), (130, 9), (65, 129), (1037, 45), (513, 72)] {
                let src = (0..<(rows * cols * size)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                var dst = [UInt8](repeating: 0, count: src.count)
                let rc = src.withUnsafeBytes { s in dst.withUnsafeMutableBytes { d in ns_transpose_raw(s.baseAddress, d.baseAddress, rows, cols, size) } }
                XCTAssertEqual(rc, 0)
                XCTAssertEqual(dst, naiveTranspose(src, rows: rows, cols: cols, size: size), "\(size)B \(rows)x\(cols)")
            }
        }
    }

    func testRowBlocksTransposeIntoTheirColumnsOfTheWholeMatrix() {
        var rng = SplitMix64(seed: 11)
        for size in [1, 2, 4, 8] {
            for (rows, cols, block) in [(1037, 45, 100), (65, 129, 7), (513, 72, 512), (9, 3, 1), (17, 70, 17)] {
                let src = (0..<(rows * cols * size)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                var dst = [UInt8](repeating: 0, count: src.count)
                src.withUnsafeBytes { s in
                    dst.withUnsafeMutableBytes { d in
                        var r0 = 0
                        while r0 < rows {
                            let n = min(block, rows - r0)
                            XCTAssertEqual(ns_transpose_rows(s.baseAddress! + r0 * cols * size, d.baseAddress! + r0 * size, n, cols, rows, size), 0)
                            r0 += n
                        }
                    }
                }
                XCTAssertEqual(dst, naiveTranspose(src, rows: rows, cols: cols, size: size), "\(size)B \(rows)x\(cols) in blocks of \(block)")
            }
        }
        let from: [UInt16] = [1, 2]
        var to: [UInt16] = [0, 0]
        XCTAssertEqual(ns_transpose_rows(from, &to, 2, 1, 1, 2), -1, "a stride shorter than the block")
        XCTAssertEqual(ns_transpose_rows(from, &to, 1, 1, 1, 3), -1, "3-byte elements")
        XCTAssertEqual(to, [0, 0], "nothing written")
    }

    func testConvertingTransposeF32ToBF16() {
        var rng = SplitMix64(seed: 9)
        let rows = 37, cols = 45
        let src = (0..<(rows * cols)).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        var dst = [UInt16](repeating: 0, count: src.count)
        let rc = src.withUnsafeBytes { s in dst.withUnsafeMutableBytes { d in ns_transpose(s.baseAddress, NS_F32, d.baseAddress, NS_BF16, rows, cols) } }
        XCTAssertEqual(rc, 0)
        for r in 0..<rows { for c in 0..<cols { XCTAssertEqual(dst[c * rows + r], referenceBF16(src[r * cols + c])) } }
    }

    func testCRC32CKnownValue() {
        let text = Array("123456789".utf8)
        XCTAssertEqual(text.withUnsafeBytes { ns_crc32c(0, $0.baseAddress, $0.count) }, 0xE306_9283)
        // continuation equals one pass
        let a = text.withUnsafeBytes { ns_crc32c(ns_crc32c(0, $0.baseAddress, 4), $0.baseAddress! + 4, 5) }
        XCTAssertEqual(a, 0xE306_9283)
    }
}
