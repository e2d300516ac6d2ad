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

    @Option(help: "Most open client connections at once; more are closed when accepted.")
    var maxConnections = TransportLimits().maxConnections

    @Option(help: "Seconds from the first byte of a request to the end of its headers (slower: 408 and disconnect).")
    var headerTimeout: Double = 10

    @Option(help: "Seconds a connection may stay open with no request in progress.")
    var idleTimeout: Double = 60

    @Option(help: "Largest request head (request line and headers together), in bytes.")
    var maxHeaderBytes = TransportLimits().maxHeaderBytes

    @Option(help: "Most header fields in one request.")
    var maxHeaderCount = TransportLimits().maxHeaderCount

    @Option(help: "Largest gateway (/v1) request body, in bytes (larger: 413 before it is read).")
    var maxBodyBytes = TransportLimits().maxBodyBytes

    @Option(help: "Deepest JSON nesting accepted in a gateway (/v1) body (deeper: 400 before parsing).")
    var maxJsonDepth = TransportLimits().maxJSONDepth

    @Option(help: "Seconds to connect to a provider.")
    var upstreamConnectTimeout: Double = 5

    @Option(help: "Seconds to wait for a provider's response headers.")
    var upstreamHeadTimeout: Double = 600

    @Option(help: "Longest gap, in seconds, between two chunks of a provider's response body.")
    var upstreamReadTimeout: Double = 300

    @Option(help: "CA certificates (PEM) trusted for providers' HTTPS in addition to the system's (e.g. a model server behind an internal CA).")
    var upstreamCaFile: String?

    /// Every bound, checked: a typo must not silently remove a protection.
    var transportLimits: TransportLimits {
        var limits = TransportLimits()
        limits.maxConnections = maxConnections
        limits.headerTimeout = .milliseconds(Int64(headerTimeout * 1000))
        limits.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        limits.maxHeaderBytes = maxHeaderBytes
        limits.maxHeaderCount = maxHeaderCount
        limits.maxBodyBytes = maxBodyBytes
        limits.maxJSONDepth = maxJsonDepth
        return limits
    }

    var upstreamTimeouts: UpstreamTimeouts {
        var timeouts = UpstreamTimeouts()
        timeouts.connect = .milliseconds(Int64(upstreamConnectTimeout * 1000))
        timeouts.head = .milliseconds(Int64(upstreamHeadTimeout * 1000))
        timeouts.read = .milliseconds(Int64(upstreamReadTimeout * 1000))
        return timeouts
    }

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard (1...1_000_000).contains(maxConnections) else { throw ValidationError("--max-connections must be between 1 and 1000000") }
        for (name, value, max) in [
            ("--header-timeout", headerTimeout, 3600.0), ("--idle-timeout", idleTimeout, 86_400),
            ("--upstream-connect-timeout", upstreamConnectTimeout, 3600), ("--upstream-head-timeout", upstreamHeadTimeout, 86_400),
            ("--upstream-read-timeout", upstreamReadTimeout, 86_400),
        ] {
            guard value.isFinite, value >= 0.1, value <= max else {
                throw ValidationError("\(name) must be between 0.1 and \(Int(max)) seconds")
            }
        }
        guard (1024...1_048_576).contains(maxHeaderBytes) else { throw ValidationError("--max-header-bytes must be between 1024 and 1048576") }
        guard (8...10_000).contains(maxHeaderCount) else { throw ValidationError("--max-header-count must be between 8 and 10000") }
        guard (2...512).contains(maxJsonDepth) else { throw ValidationError("--max-json-depth must be between 2 and 512") }
        guard (1024...1_073_741_824).contains(maxBodyBytes) else { throw ValidationError("--max-body-bytes must be between 1024 and 1073741824") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        if plainHttp {
            guard ServeOptions.isLoopback(host) else {
                throw ValidationError("--plain-http is refused on \(host): plain HTTP is allowed only on a loopback address")
            }
            guard tlsCert == nil else { throw ValidationError("--plain-http cannot be combined with --tls-cert") }
        }
    }

    func run() async throws {
        let logger = Logger(label: "gatehouse")
        let paths = common.paths
        // Everything that can fail closed happens before a port is opened.
        if let pricing, FileManager.default.contents(atPath: pricing).flatMap({ try? PricingTable.parse($0) }) == nil {
            throw GatehouseError.startup("the pricing file \(pricing) is missing or not valid pricing JSON")
        }
        let upstreamRoots = try loadUpstreamRoots()
        let opened = try await Installation.open(paths: paths, masterKey: common.masterKey, initialise: true, logger: logger)
        do {
            try await serve(opened, paths: paths, upstreamRoots: upstreamRoots, logger: logger)
            try? await opened.controlPlane.store.close()
        } catch {
            try? await opened.controlPlane.store.close()
            throw error
        }
    }

    /// The `--upstream-ca-file` certificates (none without the option).
    func loadUpstreamRoots() throws -> [NIOSSLCertificate] {
        guard let upstreamCaFile else { return [] }
        let roots: [NIOSSLCertificate]
        do {
            roots = try NIOSSLCertificate.fromPEMFile(upstreamCaFile)
        } catch {
            throw GatehouseError.startup("cannot read the CA certificates \(upstreamCaFile) (expected PEM)")
        }
        guard !roots.isEmpty else { throw GatehouseError.startup("no CA certificate in \(upstreamCaFile) (expected PEM)") }
        return roots
    }

    func serve(
        _ opened: Installation.Opened, paths: Installation.Paths, upstreamRoots: [NIOSSLCertificate], logger: Logger
    ) async throws {
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
        options.transport = transportLimits
        options.upstreamTimeouts = upstreamTimeouts
        options.upstreamRoots = upstreamRoots
        var tls: TLSContextSource? = nil
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
            tls = try TLSContextSource(certificatePath: cert!, privateKeyPath: key!)
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
