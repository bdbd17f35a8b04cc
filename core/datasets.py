"""Dataset formats -> DatasetIndex (pandas frame) + problems. No pixel decoding.

CONTRACT (stub; the foundation work fills it in):

Competition constants (mask-status layout)::

    MASK_NAMES = ("Wear", "Incorrect", "Not wear"); GENDER_NAMES = ("Male", "Female");
    AGE_NAMES = ("<30", "30-59", "60+")
    encode_class(mask, gender, age_band) -> int        # mask*6 + gender*3 + age_band
    decode_class(label) -> (mask, gender, age_band)
    CLASS_NAMES: list[str]                             # 18 names like "Wear · Male · <30"
    age_band(age_years) -> int
    TASKS = ("class", "mask", "gender", "age")         # 18 classes or one attribute

    @dataclass Problem: path: str, kind: str, message: str      # kind e.g. "truncated", "missing_photo"

    @dataclass EvalSet: root: Path, info_csv: Path, frame: pd.DataFrame (ImageID, path, exists), missing: list[str]

    @dataclass DatasetIndex:
        root: Path                  # resolved dataset root as given by the user
        format: str                 # "mask" | "imagefolder" | "csv"
        frame: pd.DataFrame         # one row per usable image, columns:
            path (str, absolute resolved), rel (str, relative to root), label (int), class_name (str),
            group (str; person folder name for the mask layout, else the file stem),
            person_id (str, e.g. "001498-1"; mask layout only, else same as group),
            mask, gender, age_band, age (int; -1 where the format has no attributes),
            photo (str; "mask1".."mask5","incorrect_mask","normal" for the mask layout, else ""),
            width, height (int, after EXIF orientation)
        classes: list[str]          # names in label order
        problems: list[Problem]
        eval: EvalSet | None        # the competition's eval/ folder when present
        has_attributes: bool        # True for the mask layout

        task_labels(task) -> (np.ndarray[int], list[str])   # labels and class names for a TASK
        summary() -> dict          # the `scan --json` object (see the foundation issue)

    scan(root, verify=False, progress=None) -> DatasetIndex
        # detects the format (mask layout given as its top, train/ or train/images/; class folders;
        # a CSV manifest path,label as the file or a folder holding it). Raises DatasetError for a
        # root that does not exist or holds no images. progress(done, total) is called when verify.
    scan_eval(root) -> EvalSet      # an eval folder (info.csv + images/) for prediction
"""
