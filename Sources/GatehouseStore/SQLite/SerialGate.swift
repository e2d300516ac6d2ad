import Synchronization

/// An async mutual-exclusion gate: at most one body runs inside ``withExclusiveAccess(_:)`` at a
/// time, and waiters are admitted in arrival order.
///
/// Why not just an actor: an actor only excludes *synchronous* stretches. At every `await`
/// inside an actor method another call may start running, so with one SQLite connection a
/// second caller could execute its statements in the middle of the first caller's open
/// `BEGIN … COMMIT` (and be committed or rolled back with it). The gate is held across the
/// awaits of a whole transaction.
///
/// Waiting is not cancellable: a waiter that is cancelled still gets its turn and then sees the
/// cancellation in its own work. Bodies are short database transactions, so this is fine.
final class SerialGate: Sendable {
    private struct State {
        var held = false
        /// Waiters in arrival order. A plain array is enough: the queue is rarely longer than
        /// a handful of entries on a control plane.
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    init() {}

    /// Runs `body` while holding the gate, releasing it whether `body` returns or throws.
    func withExclusiveAccess<T>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        do {
            let result = try await body()
            release()
            return result
        } catch {
            release()
            throw error
        }
    }

    private func acquire() async {
        // Fast path without allocating a continuation.
        let acquired = state.withLock { state in
            if state.held { return false }
            state.held = true
            return true
        }
        if acquired { return }

        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            // Re-check under the lock: the holder may have released between the fast path and here.
            let acquiredNow = state.withLock { state in
                if state.held {
                    state.waiters.append(continuation)
                    return false
                }
                state.held = true
                return true
            }
            if acquiredNow { continuation.resume() }
        }
    }

    private func release() {
        // Hand the gate directly to the next waiter (`held` stays true) so no newcomer can
        // overtake it between the release and the waiter being scheduled.
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.held = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
