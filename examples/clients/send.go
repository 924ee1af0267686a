// Sends one message with net/http. POSTHORN_URL (default http://127.0.0.1:8080) and POSTHORN_TOKEN (a
// token with the send scope) come from the environment; TO and FROM may too. Run: go run send.go
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func uuid() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6], b[8] = (b[6]&0x0f)|0x40, (b[8]&0x3f)|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func main() {
	url := env("POSTHORN_URL", "http://127.0.0.1:8080")
	token := os.Getenv("POSTHORN_TOKEN")
	if token == "" {
		fmt.Fprintln(os.Stderr, "set POSTHORN_TOKEN to a token with the send scope")
		os.Exit(1)
	}
	body, _ := json.Marshal(map[string]any{
		"from":    env("FROM", "Shop <shop@example.com>"),
		"to":      []string{env("TO", "customer@example.org")},
		"subject": "Hello from Go",
		"text":    "Sent with net/http.",
	})
	// One key per message: a retry after a timeout or a 429 is recognised, never sent twice.
	key := uuid()
	client := &http.Client{Timeout: 30 * time.Second}
	for attempt := 1; attempt <= 5; attempt++ {
		request, _ := http.NewRequest(http.MethodPost, url+"/v1/send", bytes.NewReader(body))
		request.Header.Set("Authorization", "Bearer "+token)
		request.Header.Set("Idempotency-Key", key)
		request.Header.Set("Content-Type", "application/json")
		response, err := client.Do(request)
		if err != nil {
			time.Sleep(time.Duration(attempt) * time.Second)
			continue
		}
		var answer map[string]any
		_ = json.NewDecoder(response.Body).Decode(&answer)
		response.Body.Close()
		switch response.StatusCode {
		case http.StatusOK, http.StatusAccepted:
			fmt.Println(answer["id"])
			return
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			wait, err := strconv.Atoi(response.Header.Get("Retry-After"))
			if err != nil {
				wait = attempt
			}
			time.Sleep(time.Duration(wait) * time.Second)
			continue
		}
		// Every refusal is an RFC 9457 problem document with a stable type.
		fmt.Fprintf(os.Stderr, "refused: %d %v: %v\n", response.StatusCode, answer["type"], answer["detail"])
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "gave up after 5 attempts")
	os.Exit(1)
}
