import Foundation
import XCTest

/// The library's public surface stays deliberate: the jobs, the readers, the adapter, the mesh,
/// tensors, errors and `Collective`; everything else is `package`. These tests read the sources
/// (from the package root, as `CLI.packageRoot` finds it), so a `public` added without thought
/// fails here rather than creeping into the API.
final class PublicSurfaceTests: XCTestCase {
    /// The most `public` declarations the library may have (581 before the API was trimmed).
    static let limit = 300

    /// One source line that declares something `public`.
    struct Declaration: CustomStringConvertible {
        let file: String
        let number: Int
        let text: String
        var description: String { "\(file):\(number): \(text.trimmingCharacters(in: .whitespaces))" }
    }

    /// Every Swift source line under `Sources/` except the CLI's (`Sources/nemoshard`) that
    /// `grep '^\s*\(@[a-zA-Z_]*\s\+\)*public '` selects: `public` first, after attributes only.
    static func publicDeclarations() throws -> [Declaration] {
        let pattern = try Regex(#"^\s*(@[a-zA-Z_]*\s+)*public "#)
        return try sourceLines().filter { (try? pattern.prefixMatch(in: $0.text)) != nil }
    }

    /// Every line of every library source file (not the CLI's), with its file (relative to the
    /// package root) and 1-based number.
    static func sourceLines() throws -> [Declaration] {
        let root = CLI.packageRoot
        let sources = root + "/Sources"
        guard let walker = FileManager.default.enumerator(atPath: sources) else {
            throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: sources])
        }
        var out: [Declaration] = []
        for case let relative as String in walker where relative.hasSuffix(".swift") {
            let file = "Sources/" + relative
            guard !file.hasPrefix("Sources/nemoshard/") else { continue }
            let text = try String(contentsOfFile: root + "/" + file, encoding: .utf8)
            for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                out.append(Declaration(file: file, number: i + 1, text: String(line)))
            }
        }
        return out.sorted { ($0.file, $0.number) < ($1.file, $1.number) }
    }

    func testTheSourcesAreFoundAndHoldTheAPI() throws {
        // Guards the tests below against passing on an empty or wrong tree.
        let lines = try Self.sourceLines()
        XCTAssertGreaterThan(lines.count, 5_000)
        let declared = try Self.publicDeclarations().map(\.text)
        for api in ["public enum LoadJob", "public final class DeviceMesh", "public protocol Collective",
                    "public struct Tensor", "public enum NemoShardError", "public struct NemotronV3Adapter"] {
            XCTAssertTrue(declared.contains { $0.hasPrefix(api) }, "\(api) is no longer public")
        }
    }

    func testAtMostTheLimitOfPublicDeclarations() throws {
        let declared = try Self.publicDeclarations()
        var perTarget: [String: Int] = [:]
        for d in declared { perTarget[d.file.split(separator: "/")[1].description, default: 0] += 1 }
        XCTAssertLessThanOrEqual(declared.count, Self.limit,
                                 "\(declared.count) public declarations (per folder: \(perTarget.sorted { $0.key < $1.key })); "
                                 + "make new ones `package` unless they are deliberate library API")
    }

    func testTheToolsTargetIsNotLibraryAPI() throws {
        let tools = try Self.publicDeclarations().filter { $0.file.hasPrefix("Sources/Tools/") }
        XCTAssertEqual(tools.map(\.description), [], "NemoShardTools (synth, bandwidth probe) is package-only")
    }

    func testNoPublicDeclarationHidesItsAccessAfterAnotherModifier() throws {
        // `private(set) public var` or `nonisolated(unsafe) public static var` are public too,
        // but would escape the count above: `public` must come first.
        let declared = Set(try Self.publicDeclarations().map { "\($0.file):\($0.number)" })
        let pattern = try Regex(#"^\s*[^/\s].*\bpublic\s"#)
        let hidden = try Self.sourceLines().filter {
            !declared.contains("\($0.file):\($0.number)") && (try? pattern.prefixMatch(in: $0.text)) != nil
                && !$0.text.contains("\"") && !$0.text.trimmingCharacters(in: .whitespaces).hasPrefix("//")
        }
        XCTAssertEqual(hidden.map(\.description), [])
    }

    func testNoPublicSignatureNamesAnMPIType() throws {
        // The API reaches MPI through `Collective` and `MPIRuntime.start()/stop()` only.
        let communicator = try Regex(#"\bCommunicator\b"#)
        let leaks = try Self.publicDeclarations().filter {
            $0.text.contains("MPI_") || (try? communicator.firstMatch(in: $0.text)) != nil
        }
        XCTAssertEqual(leaks.map(\.description), [])
    }

    func testNoPublicMutableGlobals() throws {
        // Stored `static var`s (a `{` on the line makes it computed) and file-scope `var`s.
        let stored = try Regex(#"\bstatic var [A-Za-z_][A-Za-z0-9_]*\s*(:[^{=]*)?(=|$)"#)
        let fileScope = try Regex(#"^public (package\(set\) |private\(set\) )?var "#)
        let globals = try Self.publicDeclarations().filter {
            $0.text.contains("nonisolated(unsafe)")
                || (try? stored.firstMatch(in: $0.text)) != nil && !$0.text.contains("{")
                || (try? fileScope.prefixMatch(in: $0.text)) != nil
        }
        XCTAssertEqual(globals.map(\.description), [])
    }

    func testTensorMemoryIsReachedOnlyInsideAScope() throws {
        // No public property or initializer hands out a tensor's mutable pointer or its storage.
        let tensor = try Self.publicDeclarations().filter { $0.file == "Sources/Core/Tensor.swift" }
        XCTAssertFalse(tensor.isEmpty)
        for d in tensor {
            XCTAssertFalse(d.text.contains("TensorStorage"), "\(d)")
            if d.text.contains("UnsafeMutableRawBufferPointer") {
                XCTAssertTrue(d.text.contains("func withUnsafeMutableBytes"), "\(d)")
            }
        }
    }
}
