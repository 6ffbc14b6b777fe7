//! The defaults of the keys that name lists, where the file names none.

/// Bootstrap scripts scanned when the config names none.
pub const DEFAULT_PREFETCH_SCRIPTS: &[&str] = &[
    "flutter.js",
    "flutter_bootstrap.js",
    "*bootstrap*.js",
    "*loader*.js",
];

/// Key and channel prefix of the shared tier when the config names none.
pub const DEFAULT_SHARED_PREFIX: &str = "asset-proxy:";

/// Query parameters that carry a version when the config names none.
pub const DEFAULT_VERSION_PARAMS: &[&str] = &["v", "ver", "version", "hash", "build"];

/// Request headers origins commonly trust to build URLs (and reflect into bodies) that the
/// cache does not key, when the config names none.
pub const DEFAULT_UNKEYED_HEADERS: &[&str] = &[
    "x-forwarded-host",
    "x-forwarded-scheme",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
    "x-host",
    "x-http-method-override",
    "forwarded",
];

/// Extensions of static assets when the config names none.
pub const DEFAULT_ASSET_EXTENSIONS: &[&str] = &[
    "js", "mjs", "cjs", "css", "wasm", "map", "woff", "woff2", "ttf", "otf", "eot", "png", "jpg",
    "jpeg", "gif", "webp", "avif", "svg", "ico", "bmp", "mp3", "mp4", "webm", "ogg", "wav",
];

/// `host:port` globs of protocols whose server speaks first (FTP, SMTP, POP3, IMAP,
/// submission, MySQL), tunnelled without waiting for the client when the config names none.
pub const DEFAULT_SERVER_SPEAKS_FIRST: &[&str] =
    &["*:21", "*:25", "*:110", "*:143", "*:587", "*:3306"];
