// Sends one message with java.net.http (Java 11+). POSTHORN_URL (default http://127.0.0.1:8080) and
// POSTHORN_TOKEN (a token with the send scope) come from the environment; TO and FROM may too.
// Run: java Send.java
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.UUID;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class Send {
    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    static String json(String text) {
        return "\"" + text.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] args) throws Exception {
        String url = env("POSTHORN_URL", "http://127.0.0.1:8080");
        String token = System.getenv("POSTHORN_TOKEN");
        if (token == null || token.isEmpty()) {
            System.err.println("set POSTHORN_TOKEN to a token with the send scope");
            System.exit(1);
        }
        String body = "{\"from\": " + json(env("FROM", "Shop <shop@example.com>"))
            + ", \"to\": [" + json(env("TO", "customer@example.org")) + "]"
            + ", \"subject\": \"Hello from Java\", \"text\": \"Sent with java.net.http.\"}";
        // One key per message: a retry after a timeout or a 429 is recognised, never sent twice.
        String key = UUID.randomUUID().toString();
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        for (int attempt = 1; attempt <= 5; attempt++) {
            HttpRequest request = HttpRequest.newBuilder(URI.create(url + "/v1/send"))
                .timeout(Duration.ofSeconds(30))
                .header("Authorization", "Bearer " + token)
                .header("Idempotency-Key", key)
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build();
            HttpResponse<String> response;
            try {
                response = client.send(request, HttpResponse.BodyHandlers.ofString());
            } catch (java.io.IOException error) {
                Thread.sleep(attempt * 1000L);
                continue;
            }
            int status = response.statusCode();
            if (status == 200 || status == 202) {
                Matcher id = Pattern.compile("\"id\"\\s*:\\s*\"([^\"]+)\"").matcher(response.body());
                System.out.println(id.find() ? id.group(1) : response.body());
                return;
            }
            if (status == 429 || status == 503) {
                long wait = response.headers().firstValue("Retry-After").map(Long::parseLong).orElse((long) attempt);
                Thread.sleep(wait * 1000L);
                continue;
            }
            // Every refusal is an RFC 9457 problem document with a stable type.
            System.err.println("refused: " + status + " " + response.body());
            System.exit(1);
        }
        System.err.println("gave up after 5 attempts");
        System.exit(1);
    }
}
