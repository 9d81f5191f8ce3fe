"""ouistiti-gw: a gevent WSGI middleware bridging WebSocket clients to UNIX-socket servers."""
from setuptools import setup

setup(
    name="ouistiti_gw",
    version="0.1.0",
    description="WebSocket to UNIX-socket gateway (WSGI middleware on gevent), after ouistiti's websocket module",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    # contrib/ is installed as the package ``ouistiti_gw_contrib`` so that no top-level
    # package called ``contrib`` lands in site-packages.
    packages=["ouistiti_gw", "ouistiti_gw_contrib"],
    package_dir={"ouistiti_gw": "ouistiti_gw", "ouistiti_gw_contrib": "contrib"},
    package_data={"ouistiti_gw": ["static/*"]},
    install_requires=[
        "gevent>=23.9",
        "gevent-websocket==0.10.1",
        "webob>=1.8.9",  # from 1.8.9 it brings legacy-cgi on 3.13, which dropped the cgi module it imports
        "PasteDeploy>=3.0",
        # websockets.speedups.apply_mask: a maintained C (SIMD) XOR for unmasking, ~20 GB/s where
        # pure Python does ~130 MB/s (frames.apply_mask falls back without it); and
        # websockets.headers' parser of Sec-WebSocket-Extensions (deflate.py)
        "websockets>=13",
    ],
    extras_require={
        # gunicorn's gevent worker (which GeventWebSocketWorker extends) imports
        # ``packaging`` without declaring it: without it the worker class "is not found".
        "gunicorn": ["gunicorn>=22", "packaging"],
        # websocket_chat --redis (federation over Redis pub/sub); imported only with that option
        "redis": ["redis>=5"],
        # metrics_path: Prometheus metrics
        "metrics": ["prometheus_client>=0.17"],
        "test": [
            "pytest>=8",
            "websockets>=13",
            "websocket-client>=1.7",
            "gunicorn>=22",
            "packaging",
            "hypothesis>=6",
            "playwright>=1.40",
            "redis>=5",
            "prometheus_client>=0.17",
            # the peer the benchmark measures us against (its smoke test runs in the suite)
            "websockify==0.13.*",
            # a PROXY protocol parser no one here wrote, to check our encoder against
            "proxy-protocol>=0.11",
            # the lint step of tox and .ci/run (ruff.toml, mypy.ini)
            "ruff>=0.6",
            "mypy>=1.11",
        ],
    },
    entry_points={
        "console_scripts": [
            "ouistiti-gw = ouistiti_gw.cli:main",
            "websocket_echo = ouistiti_gw_contrib.echo:main",
            "websocket_chat = ouistiti_gw_contrib.chat:main",
            "websocket_jsonrpc = ouistiti_gw_contrib.jsonrpc:main",
        ],
        "paste.app_factory": [
            "main = ouistiti_gw.paste:make_app",
            "static = ouistiti_gw.paste:make_static_app",
        ],
        "paste.filter_factory": ["websocket = ouistiti_gw.paste:make_filter"],
        "paste.server_runner": ["gevent = ouistiti_gw.paste:run_server"],
    },
    classifiers=[
        "Framework :: Paste",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
    ],
)
