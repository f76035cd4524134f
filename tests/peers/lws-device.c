/* A Kinetid plug played by libwebsockets (a stack nobody here wrote):
 * hello, three reports each waited for its ack, a Close 1000.
 * Usage: lws-device ADDRESS PORT PATH DEVICE-ID [HOST-HEADER]
 * (the Host header defaults to ADDRESS:PORT). */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *dev;
static int seq, closing, done, failed;
static char pending[512];
static size_t pending_len;

static void queue(struct lws *wsi, const char *fmt, ...)
{
	static int id;
	char body[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	pending_len = (size_t)snprintf(pending, sizeof pending,
				       "{\"id\":%d,\"dev\":\"%s\",%s}", ++id, dev, body);
	lws_callback_on_writable(wsi);
}

static void report(struct lws *wsi)
{
	seq++;
	queue(wsi, "\"t\":\"report\",\"ts\":%d,\"seq\":%d,\"on\":true,\"power_w\":1.5,\"energy_wh\":%d",
	      1767225600 + 60 * seq, seq, seq);
}

static int cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
	      void *in, size_t len)
{
	(void)user;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		fprintf(stderr, "lws-device: %s\n", in ? (const char *)in : "connection error");
		failed = done = 1;
		break;
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		queue(wsi, "\"t\":\"hello\",\"fw\":\"libwebsockets\",\"role\":\"active\",\"period_s\":60");
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE: {
		char msg[512];
		size_t n = len < sizeof msg - 1 ? len : sizeof msg - 1;
		memcpy(msg, in, n);
		msg[n] = 0;
		if (strstr(msg, "\"t\":\"welcome\"") || (strstr(msg, "\"t\":\"ack\"") && seq < 3))
			report(wsi);
		else if (strstr(msg, "\"t\":\"ack\"")) {
			closing = 1;
			lws_callback_on_writable(wsi);
		}
		break;
	}
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (closing) {
			lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"bye", 3);
			return -1;
		}
		if (pending_len) {
			unsigned char buf[LWS_PRE + sizeof pending];
			memcpy(buf + LWS_PRE, pending, pending_len);
			if (lws_write(wsi, buf + LWS_PRE, pending_len, LWS_WRITE_TEXT) < (int)pending_len)
				return -1;
			pending_len = 0;
		}
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		done = 1;
		break;
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols protocols[] = {
	{ "kinetid.v1", cb, 0, 4096, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: lws-device ADDRESS PORT PATH DEVICE-ID [HOST-HEADER]\n");
		return 2;
	}
	char host[300];
	snprintf(host, sizeof host, "%s:%s", argv[1], argv[2]);
	dev = argv[4];
	lws_set_log_level(LLL_ERR, NULL);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	struct lws_context *ctx = lws_create_context(&info);
	if (!ctx)
		return 1;
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof ci);
	ci.context = ctx;
	ci.address = argv[1];
	ci.port = atoi(argv[2]);
	ci.path = argv[3];
	ci.host = argc > 5 ? argv[5] : host;
	ci.origin = ci.host;
	ci.protocol = "kinetid.v1";
	if (!lws_client_connect_via_info(&ci))
		return 1;
	time_t deadline = time(NULL) + 10;
	while (!done && time(NULL) < deadline)
		if (lws_service(ctx, 100) < 0)
			break;
	lws_context_destroy(ctx);
	if (!done)
		fprintf(stderr, "lws-device: timed out\n");
	return failed || !done;
}
