import Foundation
import XCTest
@testable import NemoShardCore
@testable import NemoShardFormat
@testable import NemoShardMPI
@testable import NemoShardMesh
@testable import NemoShardModel
@testable import NemoShardEngine
@testable import NemoShard
@testable import NemoShardTools

/// Two simulated nodes (`scripts/nodes`: network namespaces, OpenMPI over TCP, each node its own
/// host name and its own "node-local disk" at the same path). A harness that cannot start fails
/// these tests; it never skips them.
final class TwoNodeTests: XCTestCase {
    struct Nodes {
        let local: String, disk0: String, disk1: String
    }

    static let script = CLI.packageRoot + "/scripts/nodes"

    /// Brings the nodes up and returns their paths.
    func nodes() throws -> Nodes {
        let up = try shell([TwoNodeTests.script, "up", "-q"])
        XCTAssertEqual(up.code, 0, "the two-node harness must start:\n\(up.err)")
        guard up.code == 0 else { throw UsageError("the two-node harness did not start") }
        let env = try shell([TwoNodeTests.script, "env"])
        var values: [String: String] = [:]
        for line in env.out.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { values[parts[0]] = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "'\"")) }
        }
        let n = Nodes(local: values["NODES_LOCAL"] ?? "", disk0: values["NODES_DISK0"] ?? "", disk1: values["NODES_DISK1"] ?? "")
        XCTAssertFalse(n.local.isEmpty || n.disk0.isEmpty || n.disk1.isEmpty, env.out)
        return n
    }

    override class func tearDown() {
        _ = try? shell([script, "down"])
        super.tearDown()
    }

    /// `mpirun -n ranks nemoshard args` over both nodes (ranks split evenly, node0 first).
    func onNodes(_ ranks: Int, _ args: [String], env: [String: String] = [:]) throws -> CLI.Output {
        // As CLI.run: no grace second before the ranks left after a failure are killed.
        let r = try shell([TwoNodeTests.script, "run", String(ranks), CLI.binary] + args,
                          env: env.merging(["NODES_TIMEOUT": "240"].merging(CLI.fastFailure) { a, _ in a }) { a, _ in a })
        return CLI.Output(code: r.code, stdout: r.out, stderr: r.err)
    }

    /// `onNodes` that must succeed: exit code 0, else its stderr in the failure.
    @discardableResult
    func onNodesOK(_ ranks: Int, _ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> CLI.Output {
        let r = try onNodes(ranks, args)
        XCTAssertEqual(r.code, 0, "nemoshard \(args.joined(separator: " ")) on \(ranks) ranks over two nodes:\n\(r.stderr)", file: file, line: line)
        return r
    }

    /// A fresh directory name on the node-local disk, removed from both disks afterwards.
    func localName(_ n: Nodes) -> String {
        let name = "t-" + UUID().uuidString.prefix(8)
        addTeardownBlock {
            for d in [n.disk0, n.disk1] { FS.removeTree(d + "/" + name) }
        }
        return name
    }

    func testLoadOnTwoNodesSharedAndNodeLocalEqualsOneNode() throws {
        let n = try nodes()
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "3"])
        let dir = temporaryDirectory(self)
        try inThreads(["load", hf, "--out", dir + "/one-node"], ranks: 4)
        let shared = try onNodes(4, ["load", hf, "--out", dir + "/shared"])
        XCTAssertEqual(shared.code, 0, shared.stderr)
        let name = localName(n)
        let local = try onNodes(4, ["load", hf, "--out", n.local + "/" + name])
        XCTAssertEqual(local.code, 0, local.stderr)
        // Each node holds its own ranks' files and a complete manifest; every file is the one-node one.
        let expected: [(String, [String])] = [(n.disk0, ["nemoshard.json", "rank-00000-of-00004.safetensors", "rank-00001-of-00004.safetensors"]),
                                              (n.disk1, ["nemoshard.json", "rank-00002-of-00004.safetensors", "rank-00003-of-00004.safetensors"])]
        for (disk, files) in expected {
            XCTAssertEqual(try FS.list(disk + "/" + name), [OutputProvenance.markerName] + files)
            XCTAssertEqual(try FS.list(disk).filter { $0.contains(name) }, [name], "no staging or lock left on \(disk)")
            for f in files {
                XCTAssertEqual(digest(try readWholeFile(disk + "/" + name + "/" + f)), digest(try readWholeFile(dir + "/one-node/" + f)), f)
                XCTAssertEqual(digest(try readWholeFile(dir + "/shared/" + f)), digest(try readWholeFile(dir + "/one-node/" + f)), f)
            }
        }
    }

    func testSaveHFFromNodeLocalFilesAndOnSharedStorage() throws {
        let n = try nodes()
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "3"])
        let dir = temporaryDirectory(self)
        let name = localName(n)
        try onNodesOK(4, ["load", hf, "--out", n.local + "/" + name])
        // --gather from node-local rank files to shared storage: every rank reads its own file and,
        // seeing rank 0's staging directory, writes its own shards.
        let gathered = try onNodes(4, ["save-hf", n.local + "/" + name, dir + "/gathered", "--gather", "--max-shard-size", "30kB", "--json"])
        XCTAssertEqual(gathered.code, 0, gathered.stderr)
        try assertVerified(hf, dir + "/gathered", strict: true)
        XCTAssertEqual(try XCTUnwrap(gathered.json?["ranks"]?.arrayValue).filter { ($0["files"]?.intValue ?? 0) > 0 }.count, 4)
        // To node-local storage: only rank 0's node gets the export. Its two ranks write; node1's
        // two ranks stream their shards to them, one sender each.
        let out = localName(n)
        let local = try onNodes(4, ["save-hf", n.local + "/" + name, n.local + "/" + out, "--gather", "--max-shard-size", "30kB", "--json"])
        XCTAssertEqual(local.code, 0, local.stderr)
        try assertVerified(hf, n.disk0 + "/" + out, strict: true)
        XCTAssertFalse(FS.exists(n.disk1 + "/" + out))
        let files = try XCTUnwrap(local.json?["ranks"]?.arrayValue).map { $0["files"]?.intValue ?? -1 }
        XCTAssertEqual(files[2...], [0, 0], "node1's ranks send everything")
        XCTAssertEqual(files[0] + files[1], Int64(try FS.list(n.disk0 + "/" + out).filter { $0.hasSuffix(".safetensors") }.count))
        XCTAssertTrue(files[0] > 0 && files[1] > 0, "both of node0's ranks write: \(files)")
        // Every rank writing its shards cannot form one checkpoint on node-local disks: refused.
        let parallel = try onNodes(4, ["save-hf", n.local + "/" + name, n.local + "/" + out + "-p"])
        XCTAssertEqual(parallel.code, 2, parallel.stderr)
        XCTAssertTrue(parallel.errorLines.first?.contains("is on node-local storage") ?? false, parallel.stderr)
        XCTAssertTrue(parallel.errorLines.first?.contains("use --gather") ?? false, parallel.stderr)
        for d in [n.disk0, n.disk1] { XCTAssertFalse(try FS.list(d).contains { $0.contains(out + "-p") }, "nothing left on \(d)") }
        // Both modes on shared storage, from a per-rank checkpoint written across the nodes.
        try onNodesOK(4, ["load", hf, "--out", dir + "/sharded"])
        try onNodesOK(4, ["save-hf", dir + "/sharded", dir + "/parallel"])
        try assertVerified(hf, dir + "/parallel", strict: true)
    }

    func testReshardAndVerifyFromNodeLocalFilesExchangeRowsOverMPI() throws {
        let n = try nodes()
        let hf = try synthCLI(["--experts", "10", "--mtp", "*E", "--shards", "3"])
        let dir = temporaryDirectory(self)
        let eight = localName(n), four = localName(n)
        try onNodesOK(8, ["load", hf, "--out", n.local + "/" + eight])
        // 4 new ranks, 2 per node: each needs rows of old files on the other node's disk.
        let re = try onNodes(4, ["reshard", n.local + "/" + eight, "--out", n.local + "/" + four, "--json"])
        XCTAssertEqual(re.code, 0, re.stderr)
        try inThreads(["load", hf, "--out", dir + "/fresh"], ranks: 4)
        for (disk, ranks) in [(n.disk0, [0, 1]), (n.disk1, [2, 3])] {
            for r in ranks {
                let f = Manifest.rankFileName(r, of: 4)
                XCTAssertEqual(digest(try readWholeFile(disk + "/" + four + "/" + f)), digest(try readWholeFile(dir + "/fresh/" + f)), f)
            }
            XCTAssertEqual(try readWholeFile(disk + "/" + four + "/nemoshard.json"), try readWholeFile(dir + "/fresh/nemoshard.json"))
        }
        // Every old byte is read once in all, by a rank that sees its file.
        let oneNode = try ok(["reshard", dir + "/fresh", "--out", dir + "/again", "--json"], ranks: 4)
        XCTAssertEqual(re.json?["bytes_read"], oneNode.json?["bytes_read"])
        // verify reads slices across the nodes the same way, and sees a byte changed on node1.
        try onNodesOK(4, ["verify", hf, n.local + "/" + eight, "--strict"])
        try onNodesOK(8, ["verify", n.local + "/" + four, n.local + "/" + eight])
        let victim = n.disk1 + "/" + eight + "/" + Manifest.rankFileName(7, of: 8)
        var bytes = try readWholeFile(victim)
        bytes[bytes.count - 1] ^= 0x01
        writeBytes(victim, bytes)
        let changed = try onNodes(4, ["verify", hf, n.local + "/" + eight])
        XCTAssertEqual(changed.code, 1, changed.stderr)
        XCTAssertTrue(changed.stdout.contains("DIFFERENT: 1 difference(s)"), changed.stdout)
    }

    func testARankKilledOnTheSecondNodeCommitsNothingOnEitherNode() throws {
        let n = try nodes()
        let hf = try synthCLI(["--experts", "10"])
        for point in ["written:3", "committed:2"] {
            let name = localName(n)
            let r = try onNodes(4, ["load", hf, "--out", n.local + "/" + name], env: ["NEMOSHARD_FAILPOINT": point])
            XCTAssertNotEqual(r.code, 0, point)
            // (A staging directory may hold a finished manifest: rank 0 can finish its part before
            // mpirun kills it. It is never committed, and the next job removes it.)
            for d in [n.disk0, n.disk1] {
                XCTAssertFalse(FS.exists(d + "/" + name), "\(point): nothing committed on \(d)")
            }
            // The next job on the same output succeeds and leaves nothing behind on either node.
            let again = try onNodes(4, ["load", hf, "--out", n.local + "/" + name])
            XCTAssertEqual(again.code, 0, again.stderr)
            for d in [n.disk0, n.disk1] { XCTAssertEqual(try FS.list(d).filter { $0.contains(name) }, [name], d) }
        }
    }
}

/// Runs a command, capturing its output.
@discardableResult
func shell(_ argv: [String], env: [String: String] = [:]) throws -> (code: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: argv[0])
    p.arguments = Array(argv.dropFirst())
    return try runProcess(p, env: env)
}
