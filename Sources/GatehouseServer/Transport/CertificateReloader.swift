import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// Re-reads the TLS certificate and key on `SIGHUP`. New connections use the new pair; open
/// connections keep theirs. A pair that cannot be loaded is refused with an error in the log
/// and the previous one stays in use.
struct CertificateReloader: Service {
    let source: TLSContextSource
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            do {
                try source.reload()
                let fingerprint = (try? SelfSignedCertificate.fingerprint(ofPEMFile: source.certificatePath)) ?? "unknown"
                logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(source.certificatePath)", "sha256": "\(fingerprint)"])
            } catch {
                logger.error("TLS certificate reload failed; the previous certificate stays in use", metadata: ["reason": "\(error)"])
            }
        }
    }
}
