import Foundation
import Glibc
import XCTest
@testable import NemoShardCore
@testable import NemoShardMPI
@testable import NemoShard
@testable import nemoshard

/// Each command is declared once (`allCommands`), and the parser, the help, dispatch and MPI
/// start-up read that one table; options are typed keys; every launcher variable is read by
/// `Launcher`, which these tests feed made-up environments.
final class CommandTableTests: XCTestCase {
    // MARK: the table

    func testTheTableHoldsEveryCommandOnceInHelpOrder() {
        let names = allCommands.map { $0.name }
        XCTAssertEqual(names, ["synth", "inspect", "convert", "load", "save-hf", "reshard", "consolidate", "verify", "bandwidth"])
        for name in names {
            XCTAssertEqual(command(named: name)?.name, name)
        }
        XCTAssertNil(command(named: "help"))
        XCTAssertNil(command(named: "--out"))
    }

    func testTheCommandsThatStartMPIAreTheMultiRankOnes() {
        let mpi = Set(allCommands.filter { $0.runsUnderMPI }.map { $0.name })
        XCTAssertEqual(mpi, ["load", "save-hf", "reshard", "verify", "bandwidth", "consolidate"])
    }

    func testEachCommandsOptionsAreUniqueAndItsUsageNamesOnlyThem() {
        for c in allCommands {
            let names = c.options.map(\.name)
            XCTAssertEqual(names.count, Set(names).count, "\(c.name): an option listed twice")
            for name in names { XCTAssertTrue(name.hasPrefix("--"), "\(c.name): \(name)") }
            for word in c.usage.split(whereSeparator: { " [|]\n".contains($0) }) where word.hasPrefix("--") {
                XCTAssertTrue(names.contains(String(word)), "\(c.name): usage names \(word), the grammar lacks it")
            }
            XCTAssertFalse(c.summary.isEmpty)
            XCTAssertFalse(c.summary.contains("\n"), "\(c.name): the command table wants one line")
        }
    }

    func testHelpListsEveryOptionWithItsPlaceholder() {
        for c in allCommands {
            let help = helpText(c)
            XCTAssertTrue(help.hasPrefix("usage: \(c.usage)\n\n\(c.summary)"), c.name)
            for o in c.options {
                XCTAssertTrue(help.contains("\n  \(o.label)  "), "\(c.name): help lacks \(o.label)")
            }
        }
        XCTAssertTrue(helpText(ConvertCommand.self).contains("\n  --to-hf  "), "a flag in convert")
        XCTAssertTrue(helpText(LoadCommand.self).contains("\n  --to-hf DIR  "), "a value in load")
        XCTAssertTrue(helpText(ReshardCommand.self).contains("\n  --ep M  "), "a command may name the value itself")
        XCTAssertTrue(helpText(SaveHFCommand.self).contains("W may be any number of ranks"), "details between summary and options")
    }

    func testTopLevelHelpListsTheTable() {
        for c in allCommands {
            XCTAssertTrue(toolUsage.contains("\n  \(c.name)  "), c.name)
            XCTAssertTrue(toolUsage.contains(c.summary), c.name)
        }
    }

    // MARK: the parser and typed keys

    func testParsesValuesFlagsAndPositionalsThroughTypedKeys() throws {
        let a = try Arguments.parse(["--out=o", "--force", "--threads", "3", "--", "--json"], for: ConvertCommand.self)
        XCTAssertEqual(a.positionals, ["--json"])
        XCTAssertEqual(a.value(.out), "o")
        XCTAssertTrue(a.has(.force))
        XCTAssertFalse(a.has(.json), "after -- everything is a positional")
        XCTAssertEqual(try a.int(.threads, default: 1), 3)
        XCTAssertEqual(try a.int(.rounds, default: 7), 7, "not given: the default")
        XCTAssertNil(a.value(.dtype))
        XCTAssertEqual(a.firstGiven([ValueKey.dtype, FlagKey.force, ValueKey.out]), "--force")
        XCTAssertNil(a.firstGiven([ValueKey.exclude, ValueKey.maxShardSize]))
        XCTAssertThrowsError(try Arguments.parse(["hf", "--json", "extra"], for: ConvertCommand.self)) {
            XCTAssertEqual(($0 as? UsageError)?.message, "'convert' expects DIR, got 2 argument(s)")
        }
    }

    func testOneNameIsAFlagInOneCommandAndTakesAValueInAnother() throws {
        let convert = try Arguments.parse(["--to-hf", "sharded", "--out", "o"], for: ConvertCommand.self)
        XCTAssertTrue(convert.has(.toHF))
        XCTAssertEqual(convert.positionals, ["sharded"])
        let load = try Arguments.parse(["hf", "--to-hf", "out"], for: LoadCommand.self)
        XCTAssertEqual(load.value(.toHF), "out")
        XCTAssertFalse(load.has(.toHF))
        XCTAssertThrowsError(try Arguments.parse(["hf", "--to-hf=x", "--out", "o"], for: ConvertCommand.self)) {
            XCTAssertEqual(($0 as? UsageError)?.message, "--to-hf takes no value")
        }
    }

    func testTheParsersUsageErrors() {
        let cases: [([String], String)] = [
            (["hf", "--out", "a", "--out", "b"], "--out is given more than once"),
            (["hf", "--force", "--force"], "--force is given more than once"),
            (["hf", "--out"], "--out needs a value"),
            (["hf", "--gather"], "unknown option --gather for 'convert'"),
            (["hf", "--out", "o", "--threads", "x"], "--threads expects an integer, got \"x\""),
        ]
        for (argv, message) in cases {
            XCTAssertThrowsError(try { () throws -> Void in
                let a = try Arguments.parse(argv, for: ConvertCommand.self)
                _ = try a.int(.threads, default: 1)
            }(), argv.joined(separator: " ")) {
                XCTAssertEqual(($0 as? UsageError)?.message, message)
            }
        }
    }

    func testHelpIsAskedForOnlyBeforeDoubleDash() {
        XCTAssertTrue(asksForHelp(["x", "--help"]))
        XCTAssertTrue(asksForHelp(["-h"]))
        XCTAssertFalse(asksForHelp(["x", "--", "--help"]))
        XCTAssertFalse(asksForHelp(["x"]))
    }

    // MARK: validation before work

    func testValidateTurnsArgumentsIntoARequestOrAUsageError() throws {
        let toHF = try ConvertCommand.validate(try Arguments.parse(["--to-hf", "s", "--out", "o", "--max-shard-size", "1MB"], for: ConvertCommand.self))
        guard case let .toHF(o) = toHF.job else { return XCTFail("\(toHF.job)") }
        XCTAssertEqual(o.maxShardBytes, 1_000_000)
        XCTAssertThrowsError(try ConvertCommand.validate(try Arguments.parse(["hf", "--out", "o", "--exclude", "x"], for: ConvertCommand.self))) {
            XCTAssertEqual(($0 as? UsageError)?.message, "--exclude goes with --to-hf")
        }
        XCTAssertThrowsError(try LoadCommand.validate(try Arguments.parse(["hf", "--gather"], for: LoadCommand.self))) {
            XCTAssertEqual(($0 as? UsageError)?.message, "--gather, --max-shard-size, --exclude, --format and --keep-source-dtypes go with --to-hf")
        }
        XCTAssertThrowsError(try LoadCommand.validate(try Arguments.parse(["hf", "--ep", "2", "--mesh", "ep=2"], for: LoadCommand.self))) {
            XCTAssertEqual(($0 as? UsageError)?.message, "give --ep or --mesh, not both")
        }
        let load = try LoadCommand.validate(try Arguments.parse(["hf", "--to-hf", "o", "--gather", "--progress"], for: LoadCommand.self))
        XCTAssertEqual(load.toHF?.gather, true)
        XCTAssertTrue(load.progress)
        XCTAssertThrowsError(try BandwidthCommand.validate(try Arguments.parse(["--rounds", "0"], for: BandwidthCommand.self)))
    }

    func testDefaultThreadsShareTheCoresAmongTheRanksTheLauncherPutsOnThisNode() throws {
        let none = try Arguments.parse(["hf", "--out", "o"], for: ConvertCommand.self)
        let cores = max(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 1)
        XCTAssertEqual(try threadsOption(none, launcher: Launcher(environment: [:])), min(cores, maxThreads))
        let crowded = Launcher(environment: ["OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4096", "OMPI_COMM_WORLD_LOCAL_SIZE": "4096"])
        XCTAssertEqual(try threadsOption(none, launcher: crowded), max(cores / 4096, 1))
        let four = Launcher(environment: ["PMI_RANK": "0", "PMI_SIZE": "8", "MPI_LOCALNRANKS": "4"])
        XCTAssertEqual(try threadsOption(none, launcher: four), max(cores / 4, 1))
        let given = try Arguments.parse(["hf", "--out", "o", "--threads", "5"], for: ConvertCommand.self)
        XCTAssertEqual(try threadsOption(given, launcher: crowded), 5, "--threads wins")
    }

    // MARK: Launcher

    func assertLauncher(_ env: [String: String], _ kind: Launcher.Kind?, rank: Int, size: Int, local: Int,
                        file: StaticString = #filePath, line: UInt = #line) {
        let l = Launcher(environment: env)
        XCTAssertEqual(l.kind, kind, "\(env)", file: file, line: line)
        XCTAssertEqual(l.isLaunched, kind != nil, file: file, line: line)
        XCTAssertEqual(l.rank, rank, "rank of \(env)", file: file, line: line)
        XCTAssertEqual(l.size, size, "size of \(env)", file: file, line: line)
        XCTAssertEqual(l.localSize, local, "local size of \(env)", file: file, line: line)
    }

    func testNoLauncherIsAWorldOfOne() {
        assertLauncher([:], nil, rank: 0, size: 1, local: 1)
        assertLauncher(["PATH": "/usr/bin", "OMPI_MCA_btl": "self,tcp"], nil, rank: 0, size: 1, local: 1)
    }

    func testOpenMPI() {
        assertLauncher(["OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"],
                       .openMPI, rank: 3, size: 8, local: 4)
        // OpenMPI (4 and 5) also sets PMIX_RANK, and may run inside a Slurm step: its own variables win.
        assertLauncher(["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "PMIX_RANK": "1",
                        "SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"],
                       .openMPI, rank: 1, size: 2, local: 1)
        assertLauncher(["OMPI_COMM_WORLD_SIZE": "2"], .openMPI, rank: 0, size: 2, local: 1)
    }

    func testPMIx() {
        assertLauncher(["PMIX_RANK": "1", "PMI_SIZE": "4"], .pmix, rank: 1, size: 4, local: 1)
        // srun --mpi=pmix: the size and this node's tasks come from the Slurm step.
        assertLauncher(["PMIX_RANK": "5", "SLURM_PROCID": "5", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "6",
                        "SLURM_STEP_TASKS_PER_NODE": "4,2", "SLURM_NODEID": "1"],
                       .pmix, rank: 5, size: 6, local: 2)
        // A rank with no size anywhere: at least rank + 1 ranks.
        assertLauncher(["PMIX_RANK": "2"], .pmix, rank: 2, size: 3, local: 1)
    }

    func testHydraAndMPICHPMI() {
        assertLauncher(["PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"], .hydra, rank: 1, size: 4, local: 2)
        assertLauncher(["PMI_SIZE": "2"], .hydra, rank: 0, size: 2, local: 1)
        // srun --mpi=pmi2 sets PMI_RANK and PMI_SIZE but not MPI_LOCALNRANKS.
        assertLauncher(["PMI_RANK": "0", "PMI_SIZE": "4", "SLURM_PROCID": "0", "SLURM_STEP_ID": "3",
                        "SLURM_NTASKS_PER_NODE": "2"], .hydra, rank: 0, size: 4, local: 2)
    }

    func testSlurmSrun() {
        assertLauncher(["SLURM_PROCID": "2", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0",
                        "SLURM_NTASKS_PER_NODE": "2"], .slurm, rank: 2, size: 4, local: 2)
        // SLURM_STEPID is the older spelling; the step's own counts win over the allocation's.
        assertLauncher(["SLURM_PROCID": "0", "SLURM_STEPID": "1", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "3",
                        "SLURM_TASKS_PER_NODE": "8(x2)", "SLURM_STEP_TASKS_PER_NODE": "3"], .slurm, rank: 0, size: 3, local: 3)
        for (node, local) in [(0, 2), (2, 2), (3, 1)] {
            assertLauncher(["SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "7", "SLURM_TASKS_PER_NODE": "2(x3),1",
                            "SLURM_NODEID": String(node)], .slurm, rank: 0, size: 7, local: local)
        }
    }

    func testAnSbatchScriptOutsideAStepIsNotLaunched() {
        // The batch script itself sees the allocation: a command run from it directly is one process.
        assertLauncher(["SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "4",
                        "SLURM_JOB_ID": "200505"], nil, rank: 0, size: 1, local: 1)
    }

    func testMalformedValuesAreIgnoredAndClamped() {
        assertLauncher(["OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "-3"],
                       .openMPI, rank: 0, size: 4, local: 1)
        assertLauncher(["OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "0"], .openMPI, rank: 5, size: 6, local: 1)
        assertLauncher(["SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "2(y3)",
                        "SLURM_NTASKS_PER_NODE": "2"], .slurm, rank: 1, size: 2, local: 2)
        assertLauncher(["SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "1",
                        "SLURM_NODEID": "4"], .slurm, rank: 1, size: 2, local: 1)
    }

    func testTheDefaultIsThisProcesssEnvironment() {
        XCTAssertEqual(Launcher(), Launcher(environment: ProcessInfo.processInfo.environment))
        XCTAssertEqual(Launcher.current, Launcher())
        XCTAssertEqual(MPIRuntime.launchedByMPIRun, Launcher.current.isLaunched)
    }

    // MARK: the binary under each launcher

    /// A command that runs in one process refuses, once (rank 0) and with exit code 2, whichever
    /// launcher started it as several ranks; started as one rank, or from a batch script, it runs.
    func testASingleProcessCommandRefusesEveryLaunchersManyRanks() throws {
        let dir = temporaryDirectory(self)
        let launched: [([String: String], Int)] = [
            (["OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"], 2),
            (["PMI_RANK": "0", "PMI_SIZE": "3"], 3),
            (["PMIX_RANK": "0", "PMI_SIZE": "4"], 4),
            (["SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "5"], 5),
        ]
        for (env, size) in launched {
            let r = try CLI.run(["synth", dir + "/s"], env: env)
            XCTAssertEqual(r.code, 2, "\(env): \(r.stderr)")
            XCTAssertEqual(r.stderr, "nemoshard: error: 'synth' runs in one process; start it without mpirun (this job has \(size) ranks)\n")
        }
        let other = try CLI.run(["synth", dir + "/s"], env: ["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"])
        XCTAssertEqual(other.code, 2)
        XCTAssertEqual(other.stderr, "", "only rank 0 says why")
        XCTAssertEqual(try FS.list(dir), [])
        try ok(["synth", dir + "/one"], env: ["SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"])
        try ok(["synth", dir + "/batch"], env: ["SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"])
    }
}
