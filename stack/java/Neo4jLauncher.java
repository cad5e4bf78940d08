// Runs Neo4j embedded with a Bolt listener, so the stack needs only Maven Central jars (no tarball).
// Usage: java -cp 'libs/*:classes' Neo4jLauncher <home dir> <bolt port>
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.logging.log4j.Log4jLogProvider;

public final class Neo4jLauncher {
    public static void main(String[] args) throws InterruptedException {
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        DatabaseManagementService service = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(GraphDatabaseSettings.auth_enabled, false)
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                // A dev box runs many services: keep off-heap page cache and tx logs small.
                .setConfig(GraphDatabaseSettings.pagecache_memory, 64L * 1024 * 1024)
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "2 files")
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, 16L * 1024 * 1024)
                // Embedded Neo4j logs nothing to the console by default; the stack log is stdout.
                .setUserLogProvider(new Log4jLogProvider(System.out))
                .build();
        // SIGTERM from `stack down` runs this, so the store is closed cleanly (no recovery next time).
        Runtime.getRuntime().addShutdownHook(new Thread(service::shutdown, "neo4j-shutdown"));
        System.out.println("Neo4jLauncher: Bolt listening on 127.0.0.1:" + port + ", home " + home);
        new CountDownLatch(1).await();
    }
}
