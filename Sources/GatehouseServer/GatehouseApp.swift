import Foundation
import GatehouseCore
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import GatehouseStore
import ServiceLifecycle

/// How `gatehouse serve` runs.
public struct ServeOptions: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 8443
    public var tlsCertificate: String?
    public var tlsPrivateKey: String?
    public var plainHTTP = false
    public var pricing: PricingTable = .shipped
    public var upstreamTimeouts = UpstreamTimeouts()
    /// Trusted for providers' HTTPS besides the system's roots.
    public var upstreamRoots: [NIOSSLCertificate] = []
    public var transport = TransportLimits()

    public init() {}

    /// `true` for 127.0.0.0/8, `::1` and `localhost`.
    public static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" { return true }
        guard let ip = IPAddress(host) else { return false }
        if ip.isIPv4 { return ip.bytes[12] == 127 }
        return ip.bytes == [UInt8](repeating: 0, count: 15) + [1]
    }
}

/// Builds the HTTP application: router, middleware and transport.
public enum GatehouseApp {
    /// The router with every route; used by the server and by in-process tests.
    /// (The gateway, `/v1/*`, is not a route: ``GatewayHandler`` answers it in front of the router.)
    public static func buildRouter(
        plane: ControlPlane, failures: AuthFailureRecorder? = nil
    ) -> Router<GatehouseRequestContext> {
        let router = Router(context: GatehouseRequestContext.self)
        let catalog = RouteCatalog()
        catalog.add(.get, "/api/health")
        catalog.add(.get, "/api/openapi.yaml")
        router.add(middleware: ErrorMiddleware(catalog: catalog))
        router.get("api/health") { _, _ in
            Response.json(.object(["status": .string("ok")]))
        }
        router.get("api/openapi.yaml") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "application/yaml; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.text)))
        }
        let login = LoginThrottle()
        func api(_ capability: Capability) -> RouterGroup<GatehouseRequestContext> {
            router.group("api").add(middleware: AdminAuthMiddleware(plane: plane, capability: capability, failures: failures))
        }
        KeyRoutes(plane: plane).register(on: api(.manageKeys), catalog: catalog)
        if let logs = plane.store as? any RequestLogStore {
            RequestRoutes(plane: plane, logs: logs).register(logs: api(.viewRequestLogs), usage: api(.viewUsage), catalog: catalog)
        }
        if plane.store is any AccessStore {
            UserRoutes(plane: plane).register(on: api(.manageTeam), catalog: catalog)
            SettingsRoutes(plane: plane).register(on: api(.manageSettings), catalog: catalog)
            SessionRoutes(plane: plane, throttle: login).register(open: router.group("api"), authenticated: api(.viewUsage), catalog: catalog)
        }
        if let audit = plane.store as? any AuditStore {
            AuditRoutes(plane: plane, audit: audit).register(read: api(.viewAudit), catalog: catalog)
            ExportRoutes(plane: plane, audit: audit, logs: plane.store as? any RequestLogStore)
                .register(on: api(.exportAndDelete), catalog: catalog)
        }
        return router
    }

    /// TLS 1.3 only, HTTP/1.1 over ALPN.
    public static func tlsConfiguration(certificatePath: String, privateKeyPath: String) throws -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw GatehouseError.startup("cannot read the TLS certificate \(certificatePath) (expected PEM)")
        }
        do {
            key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
        } catch {
            throw GatehouseError.startup("cannot read the TLS private key \(privateKeyPath) (expected PEM)")
        }
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        config.minimumTLSVersion = .tlsv13
        config.applicationProtocols = ["http/1.1"]
        return config
    }

    /// Builds the runnable application. With `tls`, the certificate is re-read on `SIGHUP`.
    public static func buildApplication(
        plane: ControlPlane, options: ServeOptions, tls: TLSContextSource?, logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void
    ) throws -> some ApplicationProtocol {
        let logWriter: RequestLogWriter? = (plane.store as? any RequestLogStore).map {
            RequestLogWriter(store: $0, keyTable: plane.keyTable, logger: logger)
        }
        let failures = AuthFailureRecorder(store: plane.store, logger: logger)
        let gateway = try logWriter.map {
            try GatewayEngine(
                plane: plane, pricing: options.pricing, logWriter: $0, failures: failures, timeouts: options.upstreamTimeouts,
                maxBodyBytes: options.transport.maxBodyBytes, maxJSONDepth: options.transport.maxJSONDepth,
                upstreamRoots: options.upstreamRoots, logger: logger)
        }
        if let logWriter { plane.setBeforeLimitRestore { await logWriter.flush() } }
        let router = buildRouter(plane: plane, failures: failures)
        let limits = options.transport
        let server = HTTPServerBuilder { responder in
            GatehouseChannel(responder: responder, tls: tls, limits: limits, gateway: gateway)
        }
        var app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: nil),
            onServerRunning: { channel in
                await onRunning(channel.localAddress?.port ?? options.port)
            },
            logger: logger
        )
        app.addServices(
            ChangeFollower(plane: plane, logger: logger), failures,
            AuditCheckpointer(plane: plane, logger: logger))
        if let logWriter { app.addServices(logWriter) }
        if let gateway { app.addServices(UpstreamPoolService(connector: gateway.connector)) }
        if let tls { app.addServices(CertificateReloader(source: tls, logger: logger)) }
        return app
    }
}
