"""The allow-list and the deny-list of :mod:`advkit.models.pickle_scan` (data only).

Allow-list first: a global that a pickle imports is *known* only when it is named here, in
``ALLOWED`` (inert constructors and helpers that ordinary PyTorch, NumPy, pandas and scikit-learn
files use, listed one by one) or ``SKLEARN_ESTIMATORS``. Any other global is *dangerous* when the
deny-list names it (its module, its exact name, or a name that means running programs, evaluating
code, file or network I/O or a nested load, wherever it is re-exported) and *unknown* otherwise.

``SKLEARN_ESTIMATORS``: ``sklearn.utils.all_estimators()`` of scikit-learn 1.9 as
``module: Class ...`` (the ``sklearn.`` prefix left out), without ``FunctionTransformer``, which
exists to call whatever function it holds; ``tests/models/test_pickle_bypasses.py`` compares it
with the installed scikit-learn. Never add ``sklearn.utils.parallel``, ``sklearn.utils._joblib``,
``sklearn.datasets`` or ``sklearn.externals`` names: they run code or do I/O.
"""

from __future__ import annotations


def grouped(text: str, prefix: str = "") -> frozenset[str]:
    """``"module: Name Name"`` lines (indented lines continue the module above) -> the set of
    ``"{prefix}module.Name"``."""
    out: set[str] = set()
    module = ""
    for line in text.strip().splitlines():
        if not line.startswith(" "):
            module, _, line = line.partition(":")
        out.update(f"{prefix}{module}.{name}" for name in line.split())
    return frozenset(out)


def by_reason(table: dict[str, str]) -> dict[str, str]:
    """``{reason: "name name ..."}`` -> ``{name: reason}``."""
    return {name: reason for reason, names in table.items() for name in names.split()}


_STORAGES = ("Float Double Half BFloat16 Long Int Short Char Byte Bool ComplexFloat ComplexDouble "
             "QInt8 QUInt8 QInt32 QUInt4x2 QUInt2x4")
ALLOWED = grouped(f"""
builtins: set frozenset slice range complex bytearray bytes int float str bool list dict tuple
    object Ellipsis NotImplemented
collections: OrderedDict defaultdict deque Counter
copyreg: _reconstructor
_codecs: encode
uuid: UUID SafeUUID
datetime: datetime date time timedelta timezone
decimal: Decimal
fractions: Fraction
argparse: Namespace
pathlib: Path PosixPath PurePosixPath WindowsPath PureWindowsPath
torch: Size device Tensor UntypedStorage contiguous_format channels_last channels_last_3d
    preserve_format float32 float64 float16 bfloat16 complex32 complex64 complex128 uint8 int8
    int16 int32 int64 uint16 uint32 uint64 bool quint8 qint8 qint32 quint4x2 float8_e4m3fn
    float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz half float double long int short cfloat cdouble
    {" ".join(s + "Storage" for s in _STORAGES.split())}
torch.cuda: {" ".join(s + "Storage" for s in _STORAGES.split())}
torch._utils: _rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_parameter
    _rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor
    _rebuild_meta_tensor_no_storage _rebuild_wrapper_subclass
torch._tensor: _rebuild_from_type_v2
torch.storage: UntypedStorage TypedStorage
torch.nn.parameter: Parameter Buffer
torch.serialization: _get_layout
torch.jit._pickle: build_intlist build_tensorlist build_doublelist build_boollist
    build_tensor_from_id restore_type_tag
numpy: ndarray dtype bool bool_ float16 float32 float64 longdouble complex64 complex128
    clongdouble int8 int16 int32 int64 uint8 uint16 uint32 uint64 intp uintp int_ str_ bytes_
    void object_ datetime64 timedelta64 mean median sum nanmean nanmedian std var amax amin max
    min
numpy.core.multiarray: _reconstruct scalar
numpy._core.multiarray: _reconstruct scalar
numpy.core.numeric: _frombuffer
numpy._core.numeric: _frombuffer
numpy.ma: MaskedArray
numpy.ma.core: MaskedArray _mareconstruct
numpy.random._pickle: __randomstate_ctor __bit_generator_ctor __generator_ctor
numpy.random.mtrand: RandomState
numpy.random._generator: Generator
numpy.random._mt19937: MT19937
numpy.random._pcg64: PCG64 PCG64DXSM
numpy.random._philox: Philox
numpy.random._sfc64: SFC64
numpy.random.bit_generator: SeedSequence __pyx_unpickle_SeedSequence
scipy.sparse._csr: csr_matrix csr_array
scipy.sparse._csc: csc_matrix csc_array
scipy.sparse._coo: coo_matrix coo_array
scipy.interpolate._bsplines: BSpline
scipy._lib.array_api_compat.numpy._aliases: asarray
pandas: DataFrame Series Index RangeIndex MultiIndex Categorical CategoricalDtype StringDtype
pandas.arrays: StringArray
pandas._libs.arrays: __pyx_unpickle_NDArrayBacked
pandas._libs.internals: _unpickle_block
pandas.core.indexes.base: _new_Index
pandas.core.internals.managers: BlockManager SingleBlockManager
joblib.numpy_pickle: NumpyArrayWrapper
""") | grouped("""
_loss.loss: AbsoluteError ExponentialLoss HalfBinomialLoss HalfGammaLoss HalfMultinomialLoss
    HalfPoissonLoss HalfSquaredError HalfTweedieLoss HalfTweedieLossIdentity HuberLoss PinballLoss
_loss.link: HalfLogitLink IdentityLink Interval LogLink LogitLink MultinomialLogit
_loss._loss: CyAbsoluteError CyExponentialLoss CyHalfBinomialLoss CyHalfGammaLoss
    CyHalfMultinomialLoss CyHalfPoissonLoss CyHalfSquaredError CyHalfTweedieLoss
    CyHalfTweedieLossIdentity CyHuberLoss CyPinballLoss __pyx_unpickle_CyHalfMultinomialLoss
linear_model._sgd_fast: EpsilonInsensitive Hinge ModifiedHuber SquaredEpsilonInsensitive
    SquaredHinge __pyx_unpickle_Classification __pyx_unpickle_Regression
tree._tree: Tree
neighbors._kd_tree: KDTree KDTree64 KDTree32 newObj
neighbors._ball_tree: BallTree BallTree64 BallTree32 newObj
metrics._dist_metrics: newObj __pyx_unpickle_DistanceMetric BrayCurtisDistance64
    CanberraDistance64 ChebyshevDistance64 DiceDistance64 EuclideanDistance64 HammingDistance64
    HaversineDistance64 JaccardDistance64 MahalanobisDistance64 ManhattanDistance64
    MatchingDistance64 MinkowskiDistance64 RogersTanimotoDistance64 RussellRaoDistance64
    SEuclideanDistance64 SokalMichenerDistance64 SokalSneathDistance64 EuclideanDistance32
    ManhattanDistance32 MinkowskiDistance32 ChebyshevDistance32
metrics._scorer: _PassthroughScorer _Scorer _MultimetricScorer
model_selection._split: KFold StratifiedKFold GroupKFold StratifiedGroupKFold RepeatedKFold
    RepeatedStratifiedKFold ShuffleSplit StratifiedShuffleSplit GroupShuffleSplit TimeSeriesSplit
    PredefinedSplit LeaveOneOut LeavePOut LeaveOneGroupOut LeavePGroupsOut _CVIterableWrapper
metrics._classification: accuracy_score balanced_accuracy_score f1_score log_loss
    precision_score recall_score
metrics._ranking: average_precision_score roc_auc_score
metrics._regression: mean_absolute_error mean_squared_error r2_score
ensemble._hist_gradient_boosting.binning: _BinMapper
ensemble._hist_gradient_boosting.predictor: TreePredictor
neural_network._stochastic_optimizers: AdamOptimizer SGDOptimizer
calibration: _CalibratedClassifier _SigmoidCalibration
cluster._birch: _CFNode _CFSubcluster
cluster._bisect_k_means: _BisectingTree
cluster._kmeans: _kmeans_single_lloyd _kmeans_single_elkan
feature_selection._univariate_selection: chi2 f_classif f_oneway f_regression r_regression
feature_selection._mutual_info: mutual_info_classif mutual_info_regression
gaussian_process._gpc: _BinaryGaussianProcessClassifierLaplace
gaussian_process.kernels: CompoundKernel ConstantKernel DotProduct ExpSineSquared
    Exponentiation Hyperparameter Matern PairwiseKernel Product RBF RationalQuadratic Sum
    WhiteKernel
utils._bunch: Bunch
""", "sklearn.")

SKLEARN_ESTIMATORS = grouped("""
calibration: CalibratedClassifierCV
cluster._affinity_propagation: AffinityPropagation
cluster._agglomerative: AgglomerativeClustering FeatureAgglomeration
cluster._bicluster: SpectralBiclustering SpectralCoclustering
cluster._birch: Birch
cluster._bisect_k_means: BisectingKMeans
cluster._dbscan: DBSCAN
cluster._hdbscan.hdbscan: HDBSCAN
cluster._kmeans: KMeans MiniBatchKMeans
cluster._mean_shift: MeanShift
cluster._optics: OPTICS
cluster._spectral: SpectralClustering
compose._column_transformer: ColumnTransformer
compose._target: TransformedTargetRegressor
covariance._elliptic_envelope: EllipticEnvelope
covariance._empirical_covariance: EmpiricalCovariance
covariance._graph_lasso: GraphicalLasso GraphicalLassoCV
covariance._robust_covariance: MinCovDet
covariance._shrunk_covariance: LedoitWolf OAS ShrunkCovariance
cross_decomposition._pls: CCA PLSCanonical PLSRegression PLSSVD
decomposition._dict_learning: DictionaryLearning MiniBatchDictionaryLearning SparseCoder
decomposition._factor_analysis: FactorAnalysis
decomposition._fastica: FastICA
decomposition._incremental_pca: IncrementalPCA
decomposition._kernel_pca: KernelPCA
decomposition._lda: LatentDirichletAllocation
decomposition._nmf: MiniBatchNMF NMF
decomposition._pca: PCA
decomposition._sparse_pca: MiniBatchSparsePCA SparsePCA
decomposition._truncated_svd: TruncatedSVD
discriminant_analysis: LinearDiscriminantAnalysis QuadraticDiscriminantAnalysis
dummy: DummyClassifier DummyRegressor
ensemble._bagging: BaggingClassifier BaggingRegressor
ensemble._forest: ExtraTreesClassifier ExtraTreesRegressor RandomForestClassifier
    RandomForestRegressor RandomTreesEmbedding
ensemble._gb: GradientBoostingClassifier GradientBoostingRegressor
ensemble._hist_gradient_boosting.gradient_boosting: HistGradientBoostingClassifier
    HistGradientBoostingRegressor
ensemble._iforest: IsolationForest
ensemble._stacking: StackingClassifier StackingRegressor
ensemble._voting: VotingClassifier VotingRegressor
ensemble._weight_boosting: AdaBoostClassifier AdaBoostRegressor
feature_extraction._dict_vectorizer: DictVectorizer
feature_extraction._hash: FeatureHasher
feature_extraction.image: PatchExtractor
feature_extraction.text: CountVectorizer HashingVectorizer TfidfTransformer TfidfVectorizer
feature_selection._from_model: SelectFromModel
feature_selection._rfe: RFE RFECV
feature_selection._sequential: SequentialFeatureSelector
feature_selection._univariate_selection: GenericUnivariateSelect SelectFdr SelectFpr SelectFwe
    SelectKBest SelectPercentile
feature_selection._variance_threshold: VarianceThreshold
frozen._frozen: FrozenEstimator
gaussian_process._gpc: GaussianProcessClassifier
gaussian_process._gpr: GaussianProcessRegressor
impute._base: MissingIndicator SimpleImputer
impute._knn: KNNImputer
isotonic: IsotonicRegression
kernel_approximation: AdditiveChi2Sampler Nystroem PolynomialCountSketch RBFSampler
    SkewedChi2Sampler
kernel_ridge: KernelRidge
linear_model._base: LinearRegression
linear_model._bayes: ARDRegression BayesianRidge
linear_model._coordinate_descent: ElasticNet ElasticNetCV Lasso LassoCV MultiTaskElasticNet
    MultiTaskElasticNetCV MultiTaskLasso MultiTaskLassoCV
linear_model._glm.glm: GammaRegressor PoissonRegressor TweedieRegressor
linear_model._huber: HuberRegressor
linear_model._least_angle: Lars LarsCV LassoLars LassoLarsCV LassoLarsIC
linear_model._logistic: LogisticRegression LogisticRegressionCV
linear_model._omp: OrthogonalMatchingPursuit OrthogonalMatchingPursuitCV
linear_model._passive_aggressive: PassiveAggressiveClassifier PassiveAggressiveRegressor
linear_model._perceptron: Perceptron
linear_model._quantile: QuantileRegressor
linear_model._ransac: RANSACRegressor
linear_model._ridge: Ridge RidgeCV RidgeClassifier RidgeClassifierCV
linear_model._stochastic_gradient: SGDClassifier SGDOneClassSVM SGDRegressor
linear_model._theil_sen: TheilSenRegressor
manifold._classical_mds: ClassicalMDS
manifold._isomap: Isomap
manifold._locally_linear: LocallyLinearEmbedding
manifold._mds: MDS
manifold._spectral_embedding: SpectralEmbedding
manifold._t_sne: TSNE
mixture._bayesian_mixture: BayesianGaussianMixture
mixture._gaussian_mixture: GaussianMixture
model_selection._classification_threshold: FixedThresholdClassifier TunedThresholdClassifierCV
model_selection._search: GridSearchCV RandomizedSearchCV
multiclass: OneVsOneClassifier OneVsRestClassifier OutputCodeClassifier
multioutput: ClassifierChain MultiOutputClassifier MultiOutputRegressor RegressorChain
naive_bayes: BernoulliNB CategoricalNB ComplementNB GaussianNB MultinomialNB
neighbors._classification: KNeighborsClassifier RadiusNeighborsClassifier
neighbors._graph: KNeighborsTransformer RadiusNeighborsTransformer
neighbors._kde: KernelDensity
neighbors._lof: LocalOutlierFactor
neighbors._nca: NeighborhoodComponentsAnalysis
neighbors._nearest_centroid: NearestCentroid
neighbors._regression: KNeighborsRegressor RadiusNeighborsRegressor
neighbors._unsupervised: NearestNeighbors
neural_network._multilayer_perceptron: MLPClassifier MLPRegressor
neural_network._rbm: BernoulliRBM
pipeline: FeatureUnion Pipeline
preprocessing._data: Binarizer KernelCenterer MaxAbsScaler MinMaxScaler Normalizer
    PowerTransformer QuantileTransformer RobustScaler StandardScaler
preprocessing._discretization: KBinsDiscretizer
preprocessing._encoders: OneHotEncoder OrdinalEncoder
preprocessing._label: LabelBinarizer LabelEncoder MultiLabelBinarizer
preprocessing._polynomial: PolynomialFeatures SplineTransformer
preprocessing._target_encoder: TargetEncoder
random_projection: GaussianRandomProjection SparseRandomProjection
semi_supervised._label_propagation: LabelPropagation LabelSpreading
semi_supervised._self_training: SelfTrainingClassifier
svm._classes: LinearSVC LinearSVR NuSVC NuSVR OneClassSVM SVC SVR
tree._classes: DecisionTreeClassifier DecisionTreeRegressor ExtraTreeClassifier
    ExtraTreeRegressor
114
""", "sklearn.")

# modules (and packages) that a model file has no reason to import from, with why
DANGEROUS_MODULES = by_reason({
    "runs shell commands or programs (os.system, subprocess)":
        "os posix nt subprocess _posixsubprocess _bootsubprocess pty commands popen2 platform pydoc "
        "venv multiprocessing torch.multiprocessing asyncio concurrent sched _osx_support "
        "_aix_support torch.utils.collect_env IPython PIL.EpsImagePlugin PIL.ImageShow "
        "PIL.ImageGrab matplotlib.animation matplotlib.backends matplotlib.dviread "
        "matplotlib.texmanager",
    "runs ifconfig, arp or netstat to find a MAC address": "uuid",
    "test tooling: runs programs, writes files, imports test code":
        "test unittest _pytest pytest pluggy hypothesis numpy._pytesttester scipy._lib._testutils "
        "pandas._testing pandas.util._tester torch.testing matplotlib.testing "
        "sklearn.utils.estimator_checks",
    "network access": "socket _socket ssl http urllib urllib2 urllib3 requests httpx ftplib "
        "smtplib telnetlib poplib imaplib nntplib socketserver xmlrpc webbrowser torch.distributed "
        "fsspec huggingface_hub aiohttp numpy.lib._datasource",
    "changes or reads files": "shutil tempfile tarfile zipfile mmap fcntl dbm sqlite3 gzip bz2 "
        "lzma wave aifc sunau chunk fileinput filecmp linecache glob _pyio posixpath ntpath "
        "genericpath logging.config logging.handlers numpy.lib.format numpy.lib._format_impl "
        "scipy.io pandas.io networkx.readwrite filelock platformdirs torch.utils.tensorboard "
        "torch.utils.file_baton torch.profiler torch.autograd.profiler torch.cuda",
    "runs or compiles Python code": "runpy code codeop timeit cProfile profile trace doctest pdb "
        "bdb idlelib types marshal numpy.testing torch.fx.graph_module torch._dynamo "
        "torch._inductor torch.package torch.jit torch._C torch.compiler torch.export torch.onnx "
        "torch.library torch.utils.benchmark functorch.compile sklearn.utils._testing "
        "sklearn.utils._show_versions sklearn._build_utils sklearn.experimental jinja2 yaml sympy "
        "numexpr pygments pandas.core.computation",
    "imports or installs code": "importlib imp zipimport pkgutil site ensurepip pip setuptools "
        "distutils _distutils_hack numpy.distutils numpy.f2py torch.hub torch.utils.cpp_extension",
    "calls native code": "ctypes _ctypes cffi _testcapi _testinternalcapi numpy.ctypeslib "
        "torch.ops torch.classes scipy._lib._ccallback",
    "interpreter internals (frames, every live object, process control)":
        "sys gc inspect signal resource threading _thread thread atexit faulthandler",
    "changes how later objects unpickle (copyreg's registries)": "copyreg",
    "calls arbitrary methods by name (attrgetter, methodcaller)": "operator _operator",
    "loads a nested pickle the scan cannot see": "pickle _pickle cPickle dill cloudpickle shelve "
        "numpy.lib.npyio numpy.lib._npyio_impl pandas.io.pickle pandas.compat.pickle_compat "
        "torch.serialization sklearn.externals",
    "joblib internals: process pools, disk caches, memory maps, nested loads":
        "joblib sklearn.utils._joblib sklearn.utils.parallel",
    "downloads data": "sklearn.datasets scipy.datasets torch.utils.model_zoo",
})
# single globals ("module.name") that are dangerous in otherwise ordinary modules
DANGEROUS_NAMES = by_reason({
    "opens, reads or writes files": "io.FileIO _io.FileIO numpy.memmap logging.FileHandler "
        "logging.basicConfig",
    "loads a sidecar file with numpy.load(allow_pickle=True), which the scan cannot see":
        "joblib.numpy_pickle_compat.NDArrayWrapper",
    "reads a sidecar file the scan cannot see": "joblib.numpy_pickle_compat.ZNDArrayWrapper",
    "generates code with exec or eval": "collections.namedtuple dataclasses.make_dataclass "
        "typing.NamedTuple",
})
# names that are dangerous in any module: libraries re-export them under many paths
DANGEROUS_ANYWHERE = by_reason({
    "its name says it runs programs": "system popen Popen fork forkpty fork_exec startfile call "
        "check_call check_output getoutput getstatusoutput run main Parallel delayed Pool "
        "ProcessPoolExecutor ThreadPoolExecutor test PytestTester",
    "its name says it evaluates or imports code": "eval exec compile execfile sympify parse_expr "
        "lambdify evaluate import_module locate resolve_name _ufunc_reconstruct getattr setattr "
        "delattr attrgetter methodcaller LowLevelCallable",
    "its name says it opens, reads or writes files": "open fdopen FileIO memmap fromfile tofile "
        "loadtxt genfromtxt fromregex FileHandler dictConfig fileConfig rmtree remove unlink "
        "from_file DataSource",
    "its name says it loads a nested pickle or downloads": "load loads unpickle Unpickler "
        "read_array read_pickle to_pickle urlopen urlretrieve NDArrayWrapper ZNDArrayWrapper "
        "NumpyArrayWrapper",
})
# name prefixes (after any leading underscores) that mean the same, wherever they appear
DANGEROUS_PREFIXES = {
    "read_": "its name says it reads files", "write_": "its name says it writes files",
    "save": "its name says it writes files", "dump": "its name says it writes files",
    "open_": "its name says it opens files", "load_": "its name says it loads files or pickles",
    "fetch_": "its name says it downloads", "download": "its name says it downloads",
    "exec": "its name says it runs programs", "spawn": "its name says it runs programs",
    "run_": "its name says it runs programs or code",
}
