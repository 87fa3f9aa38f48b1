# The flat fixed-output sources (with URLs) of the derivations reachable from `expr`: for
# channels whose expressions have no maintainers/scripts/find-tarballs.nix. Uses builtins only.
# Each entry: { name, hash, type, urls, isPatch }, as nixpkgs' find-tarballs.nix prints them.
{ expr }:
let
  canEval = v: (builtins.tryEval v).success;
  concatMap = f: l: builtins.concatLists (map f l);
  isDrv = v: builtins.isAttrs v && (v.type or null) == "derivation";
  drvIfEvaluable = d: if canEval d.drvPath then [ d ] else [ ];

  # Derivations in the top-level value: attribute sets are searched two levels deep, deeper
  # only where they ask for it (recurseForDerivations).
  derivationsIn' = depth: x:
    if !canEval x then [ ]
    else if isDrv x then drvIfEvaluable x
    else if builtins.isList x then concatMap (derivationsIn' depth) x
    else if builtins.isAttrs x && (depth < 3 || (x.recurseForDerivations or false) == true)
    then concatMap (n: derivationsIn' (depth + 1) x.${n}) (builtins.attrNames x)
    else [ ];

  # Derivations among a derivation's attributes (inputs, sources, lists of them).
  derivationsIn = x:
    if !canEval x then [ ]
    else if isDrv x then drvIfEvaluable x
    else if builtins.isList x then concatMap derivationsIn x
    else [ ];

  immediateDependenciesOf = drv:
    let
      passthru = if drv ? passthru && builtins.isAttrs drv.passthru then builtins.attrNames drv.passthru else [ ];
      attrs = builtins.removeAttrs drv ([ "meta" "passthru" ] ++ passthru);
    in concatMap (n: derivationsIn attrs.${n}) (builtins.attrNames attrs);

  keyDrv = drv: { key = drv.drvPath; value = drv; };

  dependencies = map (x: x.value) (builtins.genericClosure {
    startSet = map keyDrv (derivationsIn' 0 expr);
    operator = { key, value }: map keyDrv (immediateDependenciesOf value);
  });

  isFlatFixed = drv:
    (drv.outputHash or "") != ""
    && (drv.outputHashMode or "flat") == "flat"
    && (drv ? url || drv ? urls);

  entry = drv: {
    urls = drv.urls or [ drv.url ];
    hash = drv.outputHash;
    type = drv.outputHashAlgo or null;
    name = drv.name;
    isPatch = (drv.postFetch or "") != "";
  };

  evaluable = e: let r = builtins.tryEval (builtins.deepSeq e e); in if r.success then [ r.value ] else [ ];
in
concatMap (drv: if (builtins.tryEval (isFlatFixed drv)).value or false then evaluable (entry drv) else [ ]) dependencies
