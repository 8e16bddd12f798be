<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.34.0-Prizren" styleCategories="Symbology|Labeling|Fields|Forms" labelsEnabled="1">
  <renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="0" forceraster="0">
    <rules key="{6f0c1a52-4d1e-4a43-9e0b-7a1f6f4b2c10}">
      <rule key="{6f0c1a52-4d1e-4a43-9e0b-7a1f6f4b2c11}" symbol="0" filter="&quot;status&quot; = 'issued' AND &quot;priority&quot; = 1" label="待核查 · 优先级 1（高）"/>
      <rule key="{6f0c1a52-4d1e-4a43-9e0b-7a1f6f4b2c12}" symbol="1" filter="&quot;status&quot; = 'issued' AND &quot;priority&quot; = 2" label="待核查 · 优先级 2（中）"/>
      <rule key="{6f0c1a52-4d1e-4a43-9e0b-7a1f6f4b2c13}" symbol="2" filter="&quot;status&quot; = 'issued' AND &quot;priority&quot; = 3" label="待核查 · 优先级 3（低）"/>
      <rule key="{6f0c1a52-4d1e-4a43-9e0b-7a1f6f4b2c15}" symbol="4" filter="&quot;status&quot; = 'verified'" label="已核查（待办结）"/>
      <rule key="{6f0c1a52-4d1e-4a43-9e0b-7a1f6f4b2c16}" symbol="5" filter="&quot;status&quot; = 'closed'" label="已办结"/>
      <rule key="{6f0c1a52-4d1e-4a43-9e0b-7a1f6f4b2c14}" symbol="3" filter="&quot;key_case&quot;" label="重点督办"/>
    </rules>
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option name="color" type="QString" value="215,25,28,110"/>
            <Option name="joinstyle" type="QString" value="miter"/>
            <Option name="outline_color" type="QString" value="215,25,28,255"/>
            <Option name="outline_style" type="QString" value="solid"/>
            <Option name="outline_width" type="QString" value="0.5"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="style" type="QString" value="solid"/>
          </Option>
        </layer>
      </symbol>
      <symbol type="fill" name="1" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option name="color" type="QString" value="253,174,97,110"/>
            <Option name="joinstyle" type="QString" value="miter"/>
            <Option name="outline_color" type="QString" value="230,120,20,255"/>
            <Option name="outline_style" type="QString" value="solid"/>
            <Option name="outline_width" type="QString" value="0.5"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="style" type="QString" value="solid"/>
          </Option>
        </layer>
      </symbol>
      <symbol type="fill" name="2" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option name="color" type="QString" value="255,255,153,90"/>
            <Option name="joinstyle" type="QString" value="miter"/>
            <Option name="outline_color" type="QString" value="200,180,40,255"/>
            <Option name="outline_style" type="QString" value="solid"/>
            <Option name="outline_width" type="QString" value="0.4"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="style" type="QString" value="solid"/>
          </Option>
        </layer>
      </symbol>
      <symbol type="fill" name="3" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option name="color" type="QString" value="0,0,0,0"/>
            <Option name="joinstyle" type="QString" value="miter"/>
            <Option name="outline_color" type="QString" value="120,0,0,255"/>
            <Option name="outline_style" type="QString" value="solid"/>
            <Option name="outline_width" type="QString" value="1.2"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="style" type="QString" value="no"/>
          </Option>
        </layer>
      </symbol>
      <symbol type="fill" name="4" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option name="color" type="QString" value="67,147,195,90"/>
            <Option name="joinstyle" type="QString" value="miter"/>
            <Option name="outline_color" type="QString" value="33,102,172,255"/>
            <Option name="outline_style" type="QString" value="solid"/>
            <Option name="outline_width" type="QString" value="0.4"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="style" type="QString" value="solid"/>
          </Option>
        </layer>
      </symbol>
      <symbol type="fill" name="5" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option name="color" type="QString" value="160,160,160,70"/>
            <Option name="joinstyle" type="QString" value="miter"/>
            <Option name="outline_color" type="QString" value="100,100,100,255"/>
            <Option name="outline_style" type="QString" value="solid"/>
            <Option name="outline_width" type="QString" value="0.4"/>
            <Option name="outline_width_unit" type="QString" value="MM"/>
            <Option name="style" type="QString" value="solid"/>
          </Option>
        </layer>
      </symbol>
    </symbols>
  </renderer-v2>
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName="task_id" isExpression="0" fontSize="8" fontSizeUnit="Point" fontWeight="50" textColor="90,0,0,255" textOpacity="1">
        <text-buffer bufferDraw="1" bufferSize="0.8" bufferSizeUnits="MM" bufferColor="255,255,255,255" bufferOpacity="1"/>
      </text-style>
      <placement placement="1" dist="0" distUnits="MM"/>
      <rendering scaleVisibility="1" scaleMin="0" scaleMax="10000" obstacle="1" fontLimitPixelSize="0"/>
    </settings>
  </labeling>
  <layerGeometryType>2</layerGeometryType>
</qgis>
