import ArgumentParser
import Foundation
import GatehouseCore
import GatehouseServer
import GatehouseStore
import Hummingbird
import Logging
import NIOSSL

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway and admin API over HTTPS (initialises an empty data directory).")

    @OptionGroup var common: CommonOptions

    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(help: "Port to bind (0 picks a free one).")
    var port = 8443

    @Option(help: "TLS certificate chain (PEM). Without it a self-signed certificate is generated in the data directory.")
    var tlsCert: String?

    @Option(help: "TLS private key (PEM).")
    var tlsKey: String?

    @Flag(help: "Serve plain HTTP. Allowed only on a loopback address.")
    var plainHttp = false

    @Option(help: "Pricing overrides (JSON: {\"models\": {\"<model>\": {\"input\": <USD per 1M>, \"output\": <USD per 1M>, \"cached_input\"?: …, \"cache_write\"?: …}}}); merged over the shipped table.")
    var pricing: String?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        if plainHttp {
            guard ServeOptions.isLoopback(host) else {
                throw ValidationError("--plain-http is refused on \(host): plain HTTP is allowed only on a loopback address")
            }
            guard tlsCert == nil else { throw ValidationError("--plain-http cannot be combined with --tls-cert") }
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
        let logger = Logger(label: "gatehouse")
        let paths = common.paths
        // Everything that can fail closed happens before a port is opened.
        if let pricing, FileManager.default.contents(atPath: pricing).flatMap({ try? PricingTable.parse($0) }) == nil {
            throw GatehouseError.startup("the pricing file \(pricing) is missing or not valid pricing JSON")
        }
        let opened = try await Installation.open(paths: paths, masterKey: common.masterKey, initialise: true, logger: logger)
        do {
            try await serve(opened, paths: paths, logger: logger)
            try? await opened.controlPlane.store.close()
        } catch {
            try? await opened.controlPlane.store.close()
            throw error
        }
    }

    func serve(_ opened: Installation.Opened, paths: Installation.Paths, logger: Logger) async throws {
        if let ownerKey = opened.ownerKey {
            Console.out("Gatehouse initialised a new installation in \(paths.dataDir).")
            if let file = opened.createdMasterKeyFile {
                Console.out("Master key created at \(file) (mode 0600). Back it up and keep it secret: without it nothing in the vault can be decrypted.")
            }
            Console.out("Owner API key (shown once): \(ownerKey)")
        }
        if let logs = opened.controlPlane.store as? any RequestLogStore {
            try await opened.controlPlane.restoreLimits(from: logs)
        }
        var options = ServeOptions()
        if let pricing {
            guard let data = FileManager.default.contents(atPath: pricing) else {
                throw GatehouseError.startup("cannot read the pricing file \(pricing)")
            }
            options.pricing = PricingTable.shipped.merging(try PricingTable.parse(data))
        }
        options.host = host
        options.port = port
        options.plainHTTP = plainHttp
        var tls: TLSConfiguration? = nil
        if !plainHttp {
            var cert = tlsCert
            var key = tlsKey
            if cert == nil {
                cert = paths.tlsCertificate
                key = paths.tlsPrivateKey
                if !FileManager.default.fileExists(atPath: paths.tlsCertificate) {
                    try SelfSignedCertificate.generate(
                        into: .init(certificate: paths.tlsCertificate, privateKey: paths.tlsPrivateKey), hostnames: [host])
                    Console.out("Generated a self-signed TLS certificate.")
                }
            }
            tls = try GatehouseApp.tlsConfiguration(certificatePath: cert!, privateKeyPath: key!)
            Console.out("TLS certificate: \(cert!)")
            if let fingerprint = try? SelfSignedCertificate.fingerprint(ofPEMFile: cert!) {
                Console.out("TLS certificate SHA-256 fingerprint: \(fingerprint)")
            }
        }
        let scheme = plainHttp ? "http" : "https"
        let shownHost = host.contains(":") ? "[\(host)]" : host
        let app = try GatehouseApp.buildApplication(
            plane: opened.controlPlane, options: options, tls: tls, logger: logger,
            onRunning: { port in Console.out("Gatehouse listening on \(scheme)://\(shownHost):\(port)") })
        do {
            try await app.runService()
        } catch {
            throw GatehouseError.startup("the server stopped: \(Console.oneLine(String(describing: error)))")
        }
    }
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the master key (if needed), the first organization and its owner API key.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let paths = common.paths
        if FileManager.default.fileExists(atPath: paths.database) {
            // Opening checks the master key against existing data before saying anything else.
            try await common.withPlane { _ in }
            throw GatehouseError.alreadyInitialised(dataDir: paths.dataDir)
        }
        let opened = try await Installation.open(paths: paths, masterKey: common.masterKey, initialise: true, logger: CLILog.logger)
        try? await opened.controlPlane.store.close()
        guard let ownerKey = opened.ownerKey else { throw GatehouseError.alreadyInitialised(dataDir: paths.dataDir) }
        Console.out("Gatehouse initialised a new installation in \(paths.dataDir).")
        if let file = opened.createdMasterKeyFile {
            Console.out("Master key created at \(file) (mode 0600). Back it up and keep it secret: without it nothing in the vault can be decrypted.")
        }
        Console.out("Owner API key (shown once): \(ownerKey)")
    }
}
