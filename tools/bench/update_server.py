"""make sim's download server for updates (docs/ota.md, "The walk"): a folder of releases
served over HTTP/1.0 (HTTPS for the tests of a download's trust) on loopback, each file as
it is, so that the simulated charger is updated the way a real one is, from a URL. Threads:
the server's own (daemon) and one per request. It logs the paths asked for (gets) and can
serve a file slowly (slow), for the tests that cut the power or plug a car in during a
download."""
import functools
import http.server
import os
import ssl
import threading
import time

DEFAULT_PORT = 8378  # beside the bench page's 8377
SLOW_CHUNK = 256  # bytes a slow file is written in


class UpdateServer:
    def __init__(self, folder, port=None, tls=None):
        """port None: DEFAULT_PORT, or a free one when that is taken (a second make sim).
        tls: (certificate, key) PEM files: HTTPS (the tests of a download's trust)."""
        server = self
        self.folder = os.path.abspath(folder)
        self.gets = []
        self.rates = {}

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.gets.append(self.path)
                rate = server.rates.get(self.path)
                if rate is None:
                    return super().do_GET()
                with open(os.path.join(server.folder, self.path.lstrip("/")), "rb") as f:
                    data = f.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for i in range(0, len(data), SLOW_CHUNK):
                    try:
                        self.wfile.write(data[i:i + SLOW_CHUNK])
                        self.wfile.flush()
                    except OSError:  # the charger's power was cut
                        return
                    time.sleep(SLOW_CHUNK / rate)

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=self.folder)
        for p in ([DEFAULT_PORT, 0] if port is None else [port]):
            try:
                self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", p), handler)
                break
            except OSError:
                if p != DEFAULT_PORT:
                    raise
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name=""):
        return "%s://127.0.0.1:%d/%s" % (self.scheme, self.port, name)

    def slow(self, name, bytes_per_s):
        """name trickles out at bytes_per_s from now on."""
        self.rates["/" + name] = bytes_per_s

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
