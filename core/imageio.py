"""The one place that opens images: EXIF orientation, modes, decompression bombs, draft decode, thumbnails.

CONTRACT (stub; the foundation work fills it in):

    IMAGE_EXTENSIONS: frozenset[str]         # lower-case, with dot: .jpg .jpeg .png .bmp .webp .gif .tif .tiff
    MAX_PIXELS: int                          # above this a file is a decompression bomb: refused, never decoded
    is_junk(name: str) -> bool               # AppleDouble "._x", dotfiles, Thumbs.db, desktop.ini
    is_image_name(name: str) -> bool         # by extension, junk excluded

    @dataclass ImageHeader: width:int, height:int (after EXIF orientation), format:str, orientation:int
    read_header(path) -> ImageHeader         # headers only, no pixel decode; raises ImageError with
                                             # kind in {"empty","truncated","not_image","bomb","unreadable"}
    verify(path) -> None                     # full decode; raises ImageError

    open_rgb(path, min_size=None) -> PIL.Image.Image
        # RGB, EXIF-transposed; 16-bit scaled to 8-bit (not clipped); RGBA/LA/P composited on white;
        # CMYK converted; bombs refused (ImageError kind "bomb"). When min_size=(h, w) is given,
        # JPEGs are draft-decoded at the smallest libjpeg scale whose result still covers (h, w).
    load_resized(path, size_hw) -> np.ndarray  # uint8 HxWx3 at exactly size_hw (draft + resize)
    thumbnail_jpeg(path, max_side=160, quality=80) -> bytes
        # small JPEG bytes (a few KB), draft decoded; cached in memory (LRU) and on disk under
        # settings cache_dir/thumbs keyed by (resolved path, mtime, size, max_side)
    placeholder_jpeg(max_side=160, text="unreadable") -> bytes   # shown for broken files
"""
