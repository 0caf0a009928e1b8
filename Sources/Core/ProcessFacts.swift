import Glibc

/// This process: its id, environment switches, clock, memory high-water mark.
package enum ProcessFacts {
    /// The process id.
    package static var id: Int32 { getpid() }

    /// The value of environment variable `name`, if set.
    package static func environment(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

    /// Whether environment variable `name` is set to "1".
    package static func flag(_ name: String) -> Bool { environment(name) == "1" }

    /// Ends this process at once with SIGKILL (fault injection: a node dying).
    package static func killSelf() -> Never {
        kill(getpid(), SIGKILL)
        while true { pause() }
    }

    /// Waits until a signal ends the process.
    package static func waitForever() -> Never {
        while true { pause() }
    }

    /// Peak resident set size in bytes (VmHWM of /proc/self/status).
    package static func peakResidentBytes() -> Int {
        guard let bytes = try? readWholeFile("/proc/self/status", limit: ReadLimit.procfs) else { return 0 }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return (Int(line.filter { $0.isNumber }) ?? 0) * 1024
        }
        return 0
    }
}

/// Monotonic seconds.
package func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

