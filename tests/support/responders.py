"""
A test-controlled HTTP-01 responder: a twisted.web resource that serves the
key authorizations a test publishes, on the port Pebble validates against.
"""

from twisted.web import resource, server


class ChallengeFiles(resource.Resource):
    """
    ``/.well-known/acme-challenge/<token>`` → the published key authorization;
    404 for anything else.  Records every token Pebble asked for.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.files = {}
        self.requests = []

    def publish(self, token: str, key_authorization: str):
        self.files[token] = key_authorization

    def withdraw(self, token: str):
        self.files.pop(token, None)

    def render_GET(self, request):
        prefix = b"/.well-known/acme-challenge/"
        self.requests.append(request.path)
        if request.path.startswith(prefix):
            token = request.path[len(prefix):].decode("ascii", "replace")
            if token in self.files:
                request.setHeader(b"content-type", b"application/octet-stream")
                return self.files[token].encode("ascii")
        request.setResponseCode(404)
        return b"not found"


def listen_http01(reactor, port: int, files: ChallengeFiles):
    """
    Serve ``files`` on 127.0.0.1:``port``; returns the listening port (call
    ``stopListening()`` when done).
    """
    site = server.Site(files)
    site.noisy = False
    return reactor.listenTCP(port, site, interface="127.0.0.1")
