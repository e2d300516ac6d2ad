import Foundation
import GatehouseStore
import Logging
import ServiceLifecycle

/// Applies changes made by other processes (the CLI, other instances) within a second.
///
/// Polls the store's change sequence — one cheap indexed `max()` — every `interval`, reloads
/// the key table when it moved, and resyncs fully every `resyncInterval` as a safety net.
public struct ChangeFollower: Service {
    let plane: ControlPlane
    let interval: Duration
    let resyncInterval: Duration
    let logger: Logger

    public init(plane: ControlPlane, interval: Duration = .milliseconds(250), resyncInterval: Duration = .seconds(60), logger: Logger) {
        self.plane = plane
        self.interval = interval
        self.resyncInterval = resyncInterval
        self.logger = logger
    }

    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                let clock = ContinuousClock()
                var lastFull = clock.now
                while true {
                    try await Task.sleep(for: interval)
                    do {
                        let seq = try await plane.store.changeSequence()
                        let due = clock.now - lastFull >= resyncInterval
                        if seq != plane.keyTable.snapshot.sequence || due {
                            try await plane.reload()
                            lastFull = clock.now
                        }
                    } catch {
                        logger.error("following store changes failed; will retry", metadata: ["error": "\(error)"])
                    }
                }
            }
        } catch is CancellationError {
            return
        }
    }
}
