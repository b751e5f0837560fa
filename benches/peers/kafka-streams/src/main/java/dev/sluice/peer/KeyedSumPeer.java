package dev.sluice.peer;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.LogAndContinueProcessingExceptionHandler;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import sun.misc.Signal;

/**
 * The Kafka Streams peer of Sluice's {@code keyed-sum} (streams/src/builtin.rs): a running total
 * per account key, kept in a changelogged RocksDB store and forwarded as {@code key -> total}
 * on every input record. See README.md next to the pom for the mapping and the configuration.
 *
 * <p>stdout carries exactly two JSON lines: {@code {"event":"running","at_ms":...}} when the
 * client first reaches RUNNING (every task assigned and restored) and
 * {@code {"event":"stopped","at_ms":...}} after a clean close. Logs go to stderr.
 *
 * <p>Exit codes: 0 after SIGTERM/SIGINT and a clean close; 1 when the client failed (an
 * uncaught exception in a stream thread shuts the client down) or the close did not complete;
 * 2 on bad arguments.
 */
public final class KeyedSumPeer {
    private static final Logger LOG = LoggerFactory.getLogger(KeyedSumPeer.class);

    /** Name of the state store (and so of the changelog topic {@code <application-id>-balances-changelog}). */
    static final String STORE = "balances";
    /** Bound on a close: Kafka Streams commits (EOS: the open transaction) and closes its clients. */
    private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(30);

    private static final String USAGE = String.join("\n",
            "usage: run --bootstrap-servers HOST:PORT --input TOPIC --output TOPIC --application-id ID",
            "           --guarantee at_least_once|exactly_once_v2 --state-dir DIR",
            "           [--commit-interval-ms 100] [--threads 1]");
    private static final List<String> REQUIRED =
            List.of("bootstrap-servers", "input", "output", "application-id", "guarantee", "state-dir");
    private static final List<String> OPTIONAL = List.of("commit-interval-ms", "threads");

    private KeyedSumPeer() {}

    public static void main(String[] args) throws InterruptedException {
        // SIGTERM and SIGINT are handled here rather than by the JVM's shutdown: main closes
        // Kafka Streams cleanly and exits 0. (A JVM shut down by a signal exits 128 + the
        // signal number, and ending it from a shutdown hook with Runtime.halt would skip the
        // JVM's own cleanup, such as deleting the RocksDB library it unpacked into /tmp.)
        // Installed first, so a signal while the client is being built also exits 0.
        CountDownLatch wake = new CountDownLatch(1);
        AtomicBoolean stopRequested = new AtomicBoolean(false);
        for (String name : List.of("TERM", "INT")) {
            Signal.handle(new Signal(name), signal -> {
                stopRequested.set(true);
                wake.countDown();
            });
        }

        Map<String, String> options;
        Properties props;
        try {
            options = parseArgs(args);
            if (options.containsKey("help")) {
                System.out.println(USAGE);
                return;
            }
            props = config(options);
        } catch (IllegalArgumentException e) {
            System.err.println("kafka-streams-peer: " + e.getMessage());
            System.err.println(USAGE);
            System.exit(2);
            return;
        }

        AtomicInteger exitCode = new AtomicInteger(0);
        AtomicBoolean announcedRunning = new AtomicBoolean(false);
        AtomicBoolean closing = new AtomicBoolean(false);
        KafkaStreams streams = null;
        try {
            streams = new KafkaStreams(topology(options.get("input"), options.get("output")), props);
            streams.setStateListener((newState, oldState) -> {
                if (newState == KafkaStreams.State.RUNNING && announcedRunning.compareAndSet(false, true)) {
                    event("running");
                }
                if (newState == KafkaStreams.State.ERROR || newState == KafkaStreams.State.NOT_RUNNING) {
                    wake.countDown();
                }
            });
            streams.setUncaughtExceptionHandler(exception -> {
                LOG.error("stream thread failed; shutting the Kafka Streams client down", exception);
                exitCode.compareAndSet(0, 1);
                return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            // A backstop: a JVM that shuts down for another reason (SIGHUP, say) still closes
            // the client. Not when main has closed it (or is closing it) already.
            KafkaStreams toClose = streams;
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                if (closing.compareAndSet(false, true)) {
                    close(toClose);
                }
            }, "peer-shutdown"));
            if (!stopRequested.get()) {
                streams.start();
            }
        } catch (RuntimeException e) {
            LOG.error("Kafka Streams did not start", e);
            if (streams != null && closing.compareAndSet(false, true)) {
                close(streams);
            }
            System.exit(1);
            return;
        }

        // Until SIGTERM/SIGINT, or until the client stops by itself (ERROR, after an uncaught
        // exception in a stream thread): then a close, and the exit code.
        wake.await();
        int code = exitCode.get();
        if (code == 0 && !stopRequested.get()) {
            LOG.error("Kafka Streams stopped by itself (state {})", streams.state());
            code = 1;
        }
        boolean clean = closing.compareAndSet(false, true) && close(streams);
        if (code == 0 && clean) {
            event("stopped");
        } else if (code == 0) {
            code = 1;
        }
        System.exit(code);
    }

    /**
     * Closes the client: it commits (under exactly_once_v2, the open transaction) and leaves the
     * group, so a restart with the same application id is assigned its tasks at once rather than
     * after the session timeout. True when every thread stopped within {@link #CLOSE_TIMEOUT}.
     */
    private static boolean close(KafkaStreams streams) {
        try {
            boolean clean = streams.close(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                    .withTimeout(CLOSE_TIMEOUT));
            if (!clean) {
                LOG.error("Kafka Streams did not close within {}", CLOSE_TIMEOUT);
            }
            return clean;
        } catch (RuntimeException e) {
            LOG.error("closing Kafka Streams failed", e);
            return false;
        }
    }

    /**
     * input (String key, String value "-23") -> parse to long -> group by the same key (no
     * repartition: the key is unchanged) -> reduce into the persistent RocksDB store "balances"
     * with its changelog, no record cache -> every new total -> output (String key, String value).
     */
    static Topology topology(String input, String output) {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()).withName("amounts"))
                .mapValues(KeyedSumPeer::amount, Named.as("parse-amount"))
                .groupByKey(Grouped.with("by-account", Serdes.String(), Serdes.Long()))
                .reduce(KeyedSumPeer::add, Named.as("sum"),
                        Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(STORE)
                                .withKeySerde(Serdes.String())
                                // 8 bytes big-endian, as Sluice stores a total (i64::to_be_bytes).
                                .withValueSerde(Serdes.Long())
                                // The default, stated: a changelog topic <application-id>-balances-changelog.
                                .withLoggingEnabled(Map.of())
                                // No caching layer at all (and statestore.cache.max.bytes=0 besides):
                                // every update is forwarded, one output per input.
                                .withCachingDisabled())
                .toStream(Named.as("totals-stream"))
                .mapValues(total -> Long.toString(total), Named.as("format-total"))
                .to(output, Produced.with(Serdes.String(), Serdes.String()).withName("totals"));
        return builder.build();
    }

    /** The amount of a record: a signed integer in UTF-8 text, surrounding whitespace ignored (as Sluice's {@code trim().parse::<i64>()}). */
    static Long amount(String key, String value) {
        if (value == null) {
            throw new IllegalArgumentException("value of `" + key + "` is not an integer");
        }
        try {
            return Long.parseLong(value.strip());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("value of `" + key + "` is not an integer", e);
        }
    }

    /** The new total; an overflow is an error, as Sluice's {@code checked_add}. */
    static Long add(Long total, Long amount) {
        return Math.addExact(total, amount);
    }

    static Properties config(Map<String, String> options) {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, options.get("application-id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, options.get("bootstrap-servers"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, options.get("state-dir"));
        String guarantee = options.get("guarantee");
        if (!guarantee.equals(StreamsConfig.AT_LEAST_ONCE) && !guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2)) {
            throw new IllegalArgumentException("--guarantee `" + guarantee + "`: at_least_once or exactly_once_v2");
        }
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        // Set explicitly under both guarantees (Kafka Streams' own default is 30000 for
        // at_least_once and 100 for exactly_once_v2); 100 is Sluice's.
        long commitIntervalMs = number(options, "commit-interval-ms", 100, 0);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.toString(commitIntervalMs));
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Long.toString(number(options, "threads", 1, 1)));
        // No record cache: every update of a total is emitted (Sluice emits one output per input).
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, "0");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // A value that is not an integer (or a total that would overflow) is logged and
        // skipped, as Sluice skips a poison record (to its dead-letter topic); the default
        // would fail the stream thread. A benchmark's input never has one.
        props.put(StreamsConfig.PROCESSING_EXCEPTION_HANDLER_CLASS_CONFIG,
                LogAndContinueProcessingExceptionHandler.class.getName());
        return props;
    }

    private static long number(Map<String, String> options, String name, long fallback, long min) {
        String text = options.get(name);
        if (text == null) {
            return fallback;
        }
        long value;
        try {
            value = Long.parseLong(text);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + " `" + text + "` is not a number");
        }
        if (value < min) {
            throw new IllegalArgumentException("--" + name + " must be at least " + min);
        }
        return value;
    }

    /** {@code --name value} or {@code --name=value}; every required flag present, no unknown flag. */
    static Map<String, String> parseArgs(String[] args) {
        Map<String, String> options = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (arg.equals("--help") || arg.equals("-h")) {
                options.put("help", "");
                return options;
            }
            if (!arg.startsWith("--")) {
                throw new IllegalArgumentException("unexpected argument `" + arg + "`");
            }
            String name = arg.substring(2);
            String value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else if (i + 1 < args.length) {
                value = args[++i];
            } else {
                throw new IllegalArgumentException("--" + name + " needs a value");
            }
            if (!REQUIRED.contains(name) && !OPTIONAL.contains(name)) {
                throw new IllegalArgumentException("unknown flag --" + name);
            }
            if (value.isEmpty()) {
                throw new IllegalArgumentException("--" + name + " needs a value");
            }
            options.put(name, value);
        }
        for (String name : REQUIRED) {
            if (!options.containsKey(name)) {
                throw new IllegalArgumentException("missing --" + name);
            }
        }
        return options;
    }

    /** One JSON line on stdout, flushed at once (the harness reads it as it comes). */
    private static void event(String name) {
        long now = System.currentTimeMillis();
        synchronized (System.out) {
            System.out.println("{\"event\":\"" + name + "\",\"at_ms\":" + now + "}");
            System.out.flush();
        }
    }
}
